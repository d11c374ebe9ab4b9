import { KIND_PATTERN, KIND_RULE } from "@rtb/protocol";
import { ConfigError, runService, type Env } from "@rtb/runtime";
import { loadAgentConfig, type AgentConfig } from "./config.ts";
import { startAgent } from "./agent-service.ts";
import type { Handler } from "./handler.ts";

/** Handlers by kind: a Map, or an object (`{ render, thumbnail }`). */
export type Handlers = ReadonlyMap<string, Handler> | Readonly<Record<string, Handler>>;

/**
 * The handlers an agent serves, given the ones it has and RTB_AGENT_KINDS: unset (or empty),
 * every one of them; set, exactly the kinds it lists, each of which must have a handler (a
 * ConfigError naming RTB_AGENT_KINDS otherwise, so a typo cannot leave a kind unserved).
 * `say` words that error for the built-in agent.
 */
export function servedHandlers(handlers: Handlers, env: Env, say: { which?: string; otherwise?: string } = {}): Map<string, Handler> {
  const all = new Map(handlers instanceof Map ? handlers : Object.entries(handlers));
  for (const kind of all.keys()) {
    if (!KIND_PATTERN.test(kind)) throw new TypeError(`handler kind ${JSON.stringify(kind)}: expected ${KIND_RULE}`);
  }
  if (env.RTB_AGENT_KINDS === undefined || env.RTB_AGENT_KINDS === "") return all;
  const listed = loadAgentConfig({ RTB_AGENT_KINDS: env.RTB_AGENT_KINDS }).RTB_AGENT_KINDS;
  const missing = listed.filter((k) => !all.has(k));
  if (missing.length > 0) {
    throw new ConfigError([
      {
        variable: "RTB_AGENT_KINDS",
        value: env.RTB_AGENT_KINDS,
        expected: `kinds with ${say.which ?? "a"} handler (${[...all.keys()].join(", ") || "none"}); no handler for ${missing.join(", ")}${say.otherwise ?? ""}`,
      },
    ]);
  }
  return new Map(listed.map((k) => [k, all.get(k)!]));
}

/**
 * The whole program of an agent of your own, as the built-in one runs (services/agent/src/main.ts):
 * reads the environment once (a bad variable: its message on stderr, exit 2), logs as
 * RTB_LOG_LEVEL / RTB_LOG_FORMAT say, serves `handlers` (narrowed by RTB_AGENT_KINDS, see
 * servedHandlers), and on SIGTERM or SIGINT lets the jobs in hand finish within
 * RTB_SHUTDOWN_TIMEOUT_MS, then exits 0. Resolves once the agent is serving.
 */
export async function runAgent(handlers: Handlers, opts: { env?: Env } = {}): Promise<void> {
  const env = opts.env ?? process.env;
  let served = new Map<string, Handler>();
  const load = (e: Env): AgentConfig => {
    const config = loadAgentConfig(e);
    served = servedHandlers(handlers, e);
    return config;
  };
  await runService("agent", env, load, (config, logger, _lifecycle, tracing) => startAgent(config, logger, served, { tracing }));
}
