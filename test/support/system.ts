import { loadApiConfig, startApiService, type ApiService } from "@rtb/api";
import { loadLeaderConfig, startLeaderService, type LeaderService } from "@rtb/leader";
import { builtinHandlers, loadAgentConfig, startAgent, type AgentService, type Handler } from "@rtb/agent";
import { testLogger, type TestPlace } from "./fixtures.ts";

/** The seed flow's settings: 100 seeded units through a bound of 10, 30 % failing and retried quickly. */
export const seedFlowEnv = {
  RTB_SEED_UNITS: "100",
  RTB_BROADCAST_MAX_QUEUE: "10",
  RTB_RETRY_BACKOFF_MS: "20",
  RTB_AGENT_ERROR_RATE: "0.3",
  RTB_AGENT_WORK_MIN_MS: "1",
  RTB_AGENT_WORK_MAX_MS: "20",
};

export interface System {
  api: ApiService;
  leader: LeaderService;
  agents: AgentService[];
  /** The api's base URL, when it was started with `listen`; else null. */
  url: string | null;
  /** GET a path on the api and parse the JSON. */
  get<T = any>(path: string): Promise<T>;
  stop(): Promise<void>;
}

export interface SystemOptions {
  /** How many agents (named agent-1, agent-2, ...), or their ids. 2 unless told. */
  agents?: number | readonly string[];
  /** Handlers besides the built-in ones, by kind. */
  handlers?: ReadonlyMap<string, Handler>;
  /** The api listens on 127.0.0.1, on a port of the system's choosing (`url`), for clients out of process. */
  listen?: boolean;
}

/**
 * The whole system in this process, built from the same parts as the real services: an api,
 * one leader and the agents, all on the test file's database and broker names, with `env` on
 * top of the place's (and a reconciler pass every second unless `env` says otherwise).
 */
export async function startSystem(place: TestPlace, env: Record<string, string> = {}, opts: SystemOptions = {}): Promise<System> {
  const { agents = 2, handlers = new Map(), listen = false } = opts;
  const all = { ...place.env, RTB_RECONCILE_CRON: "*/1 * * * * *", ...(listen ? { RTB_API_HOST: "127.0.0.1:0" } : {}), ...env };
  const api = await startApiService(loadApiConfig(all), testLogger("api"), { listen });
  let leader: LeaderService | undefined;
  const started: AgentService[] = [];
  const stop = async () => {
    await Promise.all(started.map((a) => a.stop()));
    await leader?.stop();
    await api.stop();
  };
  try {
    leader = await startLeaderService(loadLeaderConfig(all), testLogger("leader"));
    const agentConfig = loadAgentConfig(all);
    const ids = typeof agents === "number" ? Array.from({ length: agents }, (_, i) => `agent-${i + 1}`) : agents;
    for (const id of ids) {
      started.push(await startAgent({ ...agentConfig, RTB_AGENT_ID: id }, testLogger("agent"), new Map([...builtinHandlers(agentConfig), ...handlers])));
    }
  } catch (err) {
    // Half a system is nobody's to stop: stop it here, so the place can be destroyed.
    await stop();
    throw err;
  }
  return {
    api,
    leader,
    agents: started,
    url: api.address ? `http://127.0.0.1:${api.address.port}` : null,
    async get(path) {
      const res = await api.app.request(path);
      return (await res.json()) as never;
    },
    stop,
  };
}
