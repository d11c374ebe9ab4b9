import { runService, type Env } from "@rtb/runtime";
import { loadAgentConfig } from "./config.ts";
import { startAgent } from "./agent-service.ts";
import { builtinHandlers } from "./builtin-handlers.ts";
import { servedHandlers } from "./run-agent.ts";

// The built-in agent serves the kinds in RTB_AGENT_KINDS (default `simulate`), each of which
// must have a built-in handler. An agent of your own (runAgent) serves every kind it has a
// handler for unless RTB_AGENT_KINDS narrows them.
const serve = (env: Env) => {
  const config = loadAgentConfig(env);
  const handlers = servedHandlers(builtinHandlers(config), { RTB_AGENT_KINDS: env.RTB_AGENT_KINDS || "simulate" }, {
    which: "a built-in",
    otherwise: ". Write your own agent with @rtb/agent for other kinds",
  });
  return { ...config, handlers };
};

// The composition root: the only place that reads process.env.
await runService("agent", process.env, serve, (config, logger, _lifecycle, tracing) => startAgent(config, logger, config.handlers, { tracing }));
