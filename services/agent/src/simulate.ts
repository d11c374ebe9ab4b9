import { sleep } from "@rtb/runtime";
import type { Handler } from "./handler.ts";

/**
 * The built-in `simulate` handler: works for a random time in [minMs, maxMs] and fails with
 * probability `errorRate` (a retryable failure), so a whole system can be tried end to end.
 */
export function simulateHandler(opts: { errorRate: number; minMs: number; maxMs: number; random?: () => number }): Handler {
  const random = opts.random ?? Math.random;
  return async ({ signal, payload }) => {
    const ms = opts.minMs + Math.round(random() * (opts.maxMs - opts.minMs));
    await sleep(ms, signal);
    if (signal.aborted) throw new Error("aborted");
    if (random() < opts.errorRate) throw new Error(`simulated failure (RTB_AGENT_ERROR_RATE=${opts.errorRate})`);
    return { workedMs: ms, echo: payload ?? null };
  };
}
