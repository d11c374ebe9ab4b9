import { ConfigError, runService, type Env } from "@rtb/runtime";
import { loadAgentConfig } from "./config.ts";
import { startAgent } from "./agent-service.ts";
import { builtinHandlers } from "./builtin-handlers.ts";

// The built-in agent serves the kinds in RTB_AGENT_KINDS that have a built-in handler.
function loadBuiltinAgentConfig(env: Env) {
  const config = loadAgentConfig(env);
  const known = [...builtinHandlers(config).keys()];
  const unknown = config.RTB_AGENT_KINDS.filter((k) => !known.includes(k));
  if (unknown.length > 0) {
    throw new ConfigError([
      {
        variable: "RTB_AGENT_KINDS",
        value: env.RTB_AGENT_KINDS,
        expected: `kinds with a built-in handler (${known.join(", ")}); no handler for ${unknown.join(", ")}. Write your own agent with @rtb/agent for other kinds`,
      },
    ]);
  }
  return config;
}

// The composition root: the only place that reads process.env.
await runService("agent", process.env, loadBuiltinAgentConfig, (config, logger) => {
  const builtins = builtinHandlers(config);
  return startAgent(config, logger, new Map(config.RTB_AGENT_KINDS.map((k) => [k, builtins.get(k)!])));
});
