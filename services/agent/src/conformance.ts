import { sleep } from "@rtb/runtime";
import { PermanentJobError, type Handler } from "./handler.ts";

/** The kind the conformance suite (npm run conformance) drives through an agent under test. */
export const CONFORMANCE_KIND = "conformance";

/**
 * What a `conformance` unit's payload asks its handler to do (docs/protocol.md's conformance
 * section and the README's "Agents in any language" say the same). Any agent that wants to be
 * checked by the suite serves this kind with exactly these rules:
 *
 * - `{"do":"succeed","result":X}`: succeed with X, exactly as given (any JSON; null if absent).
 * - `{"do":"fail","message":M,"retryable":B}`: fail with message M, retryable or not.
 * - `{"do":"sleep","ms":N}` or `{"do":"sleep","until":T}` (T in ms since the epoch): wait N ms,
 *   or until T, then succeed with `result` (null if absent). The wait ends early when the
 *   attempt is aborted (cancel, timeout, shutdown); the attempt then ends as the agent decides
 *   (nothing reported for a cancel, a retryable error for a timeout, a hand-back for a shutdown).
 * - `"attempts":K` with `fail` or `sleep`: do it on attempts 1..K only; a later attempt succeeds
 *   with `{"attempt":<its number>}` at once.
 *
 * Any other payload is a permanent error naming the field.
 */
export type ConformancePayload =
  | { do: "succeed"; result?: unknown }
  | { do: "fail"; message: string; retryable: boolean; attempts?: number }
  | { do: "sleep"; ms?: number; until?: number; result?: unknown; attempts?: number };

export const conformanceHandler: Handler = async ({ payload, attempt, signal }) => {
  const p = (payload ?? {}) as Record<string, unknown>;
  if (typeof p.attempts === "number" && attempt > p.attempts && (p.do === "fail" || p.do === "sleep")) return { attempt };
  switch (p.do) {
    case "succeed":
      return p.result ?? null;
    case "fail": {
      if (typeof p.message !== "string") throw new PermanentJobError("payload.message: expected a string");
      if (p.retryable === false) throw new PermanentJobError(p.message);
      throw new Error(p.message);
    }
    case "sleep": {
      const ms = typeof p.until === "number" ? Math.max(0, p.until - Date.now()) : typeof p.ms === "number" ? p.ms : NaN;
      if (!Number.isFinite(ms)) throw new PermanentJobError("payload.ms: expected a number (or payload.until)");
      await sleep(ms, signal);
      if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new Error("aborted");
      return p.result ?? null;
    }
    default:
      throw new PermanentJobError(`payload.do: expected succeed, fail or sleep, got ${JSON.stringify(p.do)}`);
  }
};
