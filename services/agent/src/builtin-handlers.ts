import type { AgentConfig } from "./config.ts";
import type { Handler } from "./handler.ts";
import { simulateHandler } from "./simulate.ts";
import { CONFORMANCE_KIND, conformanceHandler } from "./conformance.ts";

/**
 * `noop`: succeeds at once with a null result. It costs nothing, so a run of it measures
 * rtb itself (`npm run bench`): dispatch, routing and status tracking, no work.
 */
const noopHandler: Handler = async () => null;

/** The handlers this package ships, by kind. */
export function builtinHandlers(config: AgentConfig): Map<string, Handler> {
  return new Map([
    ["simulate", simulateHandler({ errorRate: config.RTB_AGENT_ERROR_RATE, minMs: config.RTB_AGENT_WORK_MIN_MS, maxMs: config.RTB_AGENT_WORK_MAX_MS })],
    ["noop", noopHandler],
    // What the conformance suite drives (npm run conformance): the built-in agent passes the same suite as any other.
    [CONFORMANCE_KIND, conformanceHandler],
  ]);
}
