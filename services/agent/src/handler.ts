import type { Logger } from "@rtb/runtime";

/** What a handler gets for one unit. */
export interface Job {
  unitId: number;
  attempt: number;
  kind: string;
  payload: unknown;
  /** Aborted when the handler's time is up or the agent is shutting down. */
  signal: AbortSignal;
  logger: Logger;
}

/** Resolve with the unit's result (any JSON), or throw to fail this attempt. */
export type Handler = (job: Job) => Promise<unknown>;

/** Throw this when another attempt cannot help (bad payload, ...): the unit ends as `error`. */
export class PermanentJobError extends Error {
  override name = "PermanentJobError";
}

/** A failed attempt as it is reported. */
export function describeFailure(err: unknown): { message: string; retryable: boolean } {
  const message = err instanceof Error ? err.message || err.name : String(err);
  return { message: message.slice(0, 4_000), retryable: !(err instanceof PermanentJobError) };
}
