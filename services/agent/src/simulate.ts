import { sleep } from "@rtb/runtime";
import { PermanentJobError, type Handler } from "./handler.ts";

/**
 * The built-in `simulate` handler: works for a random time in [minMs, maxMs] and fails with
 * probability `errorRate` (a retryable failure), so a whole system can be tried end to end.
 * For trying workflows without writing a handler, its payload may say `"fail": true` (a
 * permanent error), `"failAttempts": n` (attempts 1 to n fail retryably: a retry, on purpose) or
 * `"spawn": {...}` (a fan-out, as a handler's `job.spawn` takes it); its result names the
 * dependencies whose results it was given (`inputs`).
 */
export function simulateHandler(opts: { errorRate: number; minMs: number; maxMs: number; random?: () => number }): Handler {
  const random = opts.random ?? Math.random;
  return async ({ signal, payload, deps, spawn, attempt }) => {
    const ms = opts.minMs + Math.round(random() * (opts.maxMs - opts.minMs));
    await sleep(ms, signal);
    if (signal.aborted) throw new Error("aborted");
    const asked = (payload ?? {}) as { fail?: unknown; failAttempts?: unknown; spawn?: unknown };
    if (asked.fail === true) throw new PermanentJobError("simulated permanent failure (payload.fail)");
    if (typeof asked.failAttempts === "number" && attempt <= asked.failAttempts) throw new Error(`simulated failure of attempt ${attempt} (payload.failAttempts=${asked.failAttempts})`);
    if (random() < opts.errorRate) throw new Error(`simulated failure (RTB_AGENT_ERROR_RATE=${opts.errorRate})`);
    if (asked.spawn !== undefined) spawn(asked.spawn as Parameters<typeof spawn>[0]);
    const inputs = Object.keys(deps ?? {});
    return inputs.length > 0 ? { workedMs: ms, echo: payload ?? null, inputs } : { workedMs: ms, echo: payload ?? null };
  };
}
