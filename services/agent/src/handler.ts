import { cutMessage, fieldName, type SpawnInput } from "@rtb/protocol";
import type { Logger } from "@rtb/runtime";

/**
 * What a handler gets for one unit: one attempt at it. The same unit can reach a handler more
 * than once (a retry after an error, a job handed back by an agent that stopped or lost its
 * broker connection): delivery is at least once, so the work should be safe to repeat.
 */
export interface Job<P = unknown> {
  /** The unit's id (`GET /units/:id`). */
  unitId: number;
  /** 1 for the first attempt; a retry of a retryable error runs with the next. */
  attempt: number;
  /** The unit's kind: the key this handler is served under. */
  kind: string;
  /** The unit's payload as enqueued (any JSON; `{}` when none was given), or as the handler's schema parsed it (defineHandler). */
  payload: P;
  /**
   * The results of the unit's dependencies that succeeded, by step name (a workflow's step), or
   * by ref or id (a unit enqueued with dependsOn); `{}` for a unit without dependencies.
   */
  deps: Record<string, unknown>;
  /**
   * The W3C traceparent of this attempt's handler span (OpenTelemetry; the unit's trace, from
   * its producer through rtb): a parent for spans of your own. Undefined when the unit has no trace.
   */
  traceparent?: string | undefined;
  /**
   * Fan out: enqueue these steps in the unit's workflow with its success (and a join that waits
   * for them all, which whoever waits for this unit then waits for too). Exactly once: they are
   * written in the transaction that records the success. Call it at most once per attempt; a
   * fan-out that is not a valid DAG ends the attempt as a permanent error naming the field.
   */
  spawn(fanOut: SpawnInput): void;
  /**
   * Aborted when the handler's time is up (RTB_AGENT_TIMEOUT_MS), the agent is shutting down, or
   * an operator cancelled the unit (`signal.reason` is then a UnitCancelledError, and nothing more
   * is reported for the attempt): stop, and throw.
   */
  signal: AbortSignal;
  /** The agent's logger, with `unitId`, `attempt` and `kind` on every line. */
  logger: Logger;
}

/**
 * Resolve with the unit's result (any JSON; undefined is recorded as null), or throw to fail
 * this attempt: a retryable error (another attempt follows while the unit has attempts left),
 * or a PermanentJobError, which ends the unit as `error`.
 */
export type Handler<P = unknown> = (job: Job<P>) => Promise<unknown>;

/** Throw this when another attempt cannot help (bad payload, ...): the unit ends as `error`. */
export class PermanentJobError extends Error {
  override name = "PermanentJobError";
}

/** A failed attempt as it is reported. */
export function describeFailure(err: unknown): { message: string; retryable: boolean } {
  const message = err instanceof Error ? err.message || err.name : String(err);
  return { message: cutMessage(message), retryable: !(err instanceof PermanentJobError) };
}

/**
 * A validator in the Standard Schema form (standardschema.dev), which zod 4 (and valibot,
 * arktype, ...) schemas are: structural, so a schema from the agent's own copy of zod fits.
 */
export interface PayloadSchema<Output = unknown> {
  readonly "~standard": {
    readonly version: 1;
    readonly vendor: string;
    readonly validate: (value: unknown) => PayloadSchemaResult<Output> | Promise<PayloadSchemaResult<Output>>;
    readonly types?: { readonly input: unknown; readonly output: Output } | undefined;
  };
}
export type PayloadSchemaResult<Output> =
  | { readonly value: Output; readonly issues?: undefined }
  | { readonly issues: ReadonlyArray<{ readonly message: string; readonly path?: ReadonlyArray<PropertyKey | { readonly key: PropertyKey }> | undefined }> };

/** What a schema's parsed value is. */
export type PayloadOf<S> = S extends PayloadSchema<infer O> ? O : never;

export interface HandlerDefinition<S extends PayloadSchema> {
  /** Checked before `run`: a payload that fails it ends the attempt as a permanent error naming the field. */
  payload: S;
  run(job: Job<PayloadOf<S>>): Promise<unknown>;
}

/**
 * A handler whose payload is checked by a schema first, and given to `run` parsed (and typed):
 *
 *     defineHandler({ payload: z.object({ scene: z.string() }), run: async ({ payload }) => render(payload.scene) })
 *
 * A payload the schema refuses never reaches `run`: the attempt ends as a PermanentJobError
 * naming each field and why (`payload.scene: Invalid input: expected string, received undefined`).
 */
export function defineHandler<S extends PayloadSchema>(definition: HandlerDefinition<S>): Handler {
  return async (job) => {
    const checked = await definition.payload["~standard"].validate(job.payload);
    if (checked.issues) throw new PermanentJobError(payloadIssues(checked.issues));
    return definition.run({ ...job, payload: checked.value as PayloadOf<S> });
  };
}

function payloadIssues(issues: Extract<PayloadSchemaResult<unknown>, { issues: unknown }>["issues"]): string {
  if (issues.length === 0) return "payload: invalid";
  return issues
    .map((issue) => {
      const path = (issue.path ?? []).map((p) => (typeof p === "object" ? p.key : p));
      return `${fieldName(["payload", ...path])}: ${issue.message}`;
    })
    .join("; ");
}
