import type { AgentConfig } from "./config.ts";
import type { Handler } from "./handler.ts";
import { simulateHandler } from "./simulate.ts";

/** The handlers this package ships, by kind. */
export function builtinHandlers(config: AgentConfig): Map<string, Handler> {
  return new Map([
    ["simulate", simulateHandler({ errorRate: config.RTB_AGENT_ERROR_RATE, minMs: config.RTB_AGENT_WORK_MIN_MS, maxMs: config.RTB_AGENT_WORK_MAX_MS })],
  ]);
}
