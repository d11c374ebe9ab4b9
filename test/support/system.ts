import { loadApiConfig, startApiService, type ApiService } from "@rtb/api";
import { loadLeaderConfig, startLeaderService, type LeaderService } from "@rtb/leader";
import { builtinHandlers, loadAgentConfig, startAgent, type AgentService, type Handler } from "@rtb/agent";
import { testLogger, type TestPlace } from "./fixtures.ts";

export interface System {
  api: ApiService;
  leader: LeaderService;
  agents: AgentService[];
  /** GET a path on the api and parse the JSON. */
  get<T = any>(path: string): Promise<T>;
  stop(): Promise<void>;
}

/**
 * The whole system in this process, built from the same parts as the real services: an api,
 * one leader and `agents` agents, all on the test file's database and broker names.
 */
export async function startSystem(
  place: TestPlace,
  env: Record<string, string> = {},
  agents = 2,
  /** Handlers besides the built-in ones, by kind. */
  extraHandlers: ReadonlyMap<string, Handler> = new Map(),
): Promise<System> {
  const all = { ...place.env, RTB_RECONCILE_CRON: "*/1 * * * * *", ...env };
  const api = await startApiService(loadApiConfig(all), testLogger("api"));
  const leader = await startLeaderService(loadLeaderConfig(all), testLogger("leader"));
  const agentConfig = loadAgentConfig(all);
  const started: AgentService[] = [];
  for (let i = 0; i < agents; i++) {
    started.push(await startAgent({ ...agentConfig, RTB_AGENT_ID: `agent-${i + 1}` }, testLogger("agent"), new Map([...builtinHandlers(agentConfig), ...extraHandlers])));
  }
  return {
    api,
    leader,
    agents: started,
    async get(path) {
      const res = await api.app.request(path);
      return (await res.json()) as never;
    },
    async stop() {
      await Promise.all(started.map((a) => a.stop()));
      await leader.stop();
      await api.stop();
    },
  };
}
