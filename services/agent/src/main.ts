import { ConfigError, createLifecycle, createLogger } from "@rtb/runtime";
import { loadAgentConfig } from "./config.ts";
import { startAgent } from "./agent-service.ts";
import { builtinHandlers } from "./builtin-handlers.ts";

// The composition root: the only place that reads process.env and installs signal handlers.
let config;
try {
  config = loadAgentConfig(process.env);
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  console.error(`rtb agent: ${err.message}`);
  process.exit(2);
}
const logger = createLogger({ service: "agent", level: config.RTB_LOG_LEVEL, format: config.RTB_LOG_FORMAT });
const builtins = builtinHandlers(config);
const unknown = config.RTB_AGENT_KINDS.filter((k) => !builtins.has(k));
if (unknown.length > 0) {
  console.error(`rtb agent: invalid configuration:\n  RTB_AGENT_KINDS: no built-in handler for ${unknown.join(", ")} (built in: ${[...builtins.keys()].join(", ")}; write your own agent with @rtb/agent for other kinds)`);
  process.exit(2);
}
const lifecycle = createLifecycle(logger, config.RTB_SHUTDOWN_TIMEOUT_MS);
try {
  const handlers = new Map(config.RTB_AGENT_KINDS.map((k) => [k, builtins.get(k)!]));
  const agent = await startAgent(config, logger, handlers);
  lifecycle.onStop("agent", () => agent.stop());
} catch (err) {
  logger.fatal({ err: (err as Error).message }, "cannot start the agent");
  await lifecycle.shutdown(1, "start failed");
}
