import { z } from "zod";
import { groupName, intParam, statusList, unitKind, unitRef } from "./fields.ts";

/**
 * What the api's requests take: the api validates with these (and documents them in
 * /openapi.json); the CLI types what it sends with them.
 */

/** The limits a request is held to, from the api's configuration. */
export interface RequestLimits {
  /** RTB_API_MAX_BATCH: units in one POST /units. */
  maxBatch: number;
  /** RTB_MAX_ATTEMPTS: a unit's attempts when the request does not say. */
  maxAttempts: number;
}

/** The longest a unit may be delayed (runAt or delayMs): 366 days. */
export const MAX_DELAY_MS = 366 * 24 * 60 * 60 * 1000;

/** POST /units: one unit, or a batch; their bounds and defaults come from the configuration. */
export function unitSchemas(limits: RequestLimits) {
  const newUnit = z
    .strictObject({
      kind: unitKind,
      group: groupName.default("default"),
      priority: z.number().int().min(-1_000_000).max(1_000_000).default(0).describe("Higher first."),
      // The metadata: a generator leaves an unknown's default out of the document.
      payload: z.unknown().default({}).meta({ default: {} }).describe("Any JSON; handed to the agent as it is."),
      ref: unitRef.optional().describe("Your idempotency key: POST the same ref again and you get the existing unit back, never a second one."),
      maxAttempts: z.number().int().min(1).max(1000).default(limits.maxAttempts).describe("Attempts before a retryable error is final (RTB_MAX_ATTEMPTS)."),
      runAt: z.iso
        .datetime({ offset: true, message: "expected an ISO 8601 time with its offset, e.g. 2027-01-31T09:00:00Z" })
        .optional()
        .describe("Not before then: the unit is pending but not ready until this time (a time in the past means now; at most 366 days ahead)."),
      delayMs: z.number().int().min(0).max(MAX_DELAY_MS).optional().describe("Not before this many milliseconds from now (the database's clock); at most 366 days. Give runAt or delayMs, not both."),
    })
    .superRefine((u, ctx) => {
      if (u.runAt !== undefined && u.delayMs !== undefined) ctx.addIssue({ code: "custom", path: ["delayMs"], message: "give runAt or delayMs, not both" });
      else if (u.runAt !== undefined && Date.parse(u.runAt) > Date.now() + MAX_DELAY_MS) {
        ctx.addIssue({ code: "custom", path: ["runAt"], message: "expected a time at most 366 days ahead" });
      }
    })
    .describe("A unit to enqueue.");
  const batch = z
    .array(newUnit)
    .min(1, { message: "expected at least one unit" })
    .max(limits.maxBatch, { message: `expected at most ${limits.maxBatch} units per request (RTB_API_MAX_BATCH); send several requests` })
    .describe(`Up to ${limits.maxBatch} units, inserted in one statement, in this order.`);
  return { newUnit, batch };
}
type UnitSchemas = ReturnType<typeof unitSchemas>;
/** One unit as a producer writes it (the defaults left out). */
export type NewUnitInput = z.input<UnitSchemas["newUnit"]>;
/** One unit as the api has validated it (the defaults filled in). */
export type ParsedNewUnit = z.output<UnitSchemas["newUnit"]>;

export const listUnitsQuery = z.strictObject({
  status: statusList.optional(),
  kind: unitKind.optional(),
  group: groupName.optional(),
  ref: unitRef.optional().describe("Exactly this ref (the producer's idempotency key): the one unit enqueued with it, or an empty page."),
  waiting: z
    .enum(["nothing", "clock", "agent"], { message: "expected nothing, clock or agent" })
    .optional()
    .describe("Pending units by what they wait for: nothing (ready), clock (delayed or in a retry backoff: see notBefore), agent (no agent of their kind yet)."),
  stuck: z
    .enum(["true", "false"], { message: "expected true or false" })
    .transform((v) => v === "true")
    .optional()
    .describe("true: only units in flight for longer than their timeout (RTB_DISPATCH_TIMEOUT_MS, RTB_PROCESSING_TIMEOUT_MS)."),
  limit: intParam({ min: 1, max: 1000, defaultValue: 50 }).describe("Units per page, 1 to 1000 (default 50)."),
  after: intParam({ min: 1, max: Number.MAX_SAFE_INTEGER, cursor: true }).optional().describe("The nextCursor of the previous page."),
});

export const idParam = z.object({ id: intParam({ min: 1, max: Number.MAX_SAFE_INTEGER }).describe("The unit's id.") });

export const redriveBody = z
  .strictObject({ kind: unitKind.optional(), group: groupName.optional() })
  .describe("Optional filters; an empty body redrives every errored unit.");

export const nextQuery = z.strictObject({ limit: intParam({ min: 1, max: 1000, defaultValue: 10 }).describe("How many, 1 to 1000 (default 10).") });

export const groupParam = z.object({ name: groupName });

export const groupBody = z
  .strictObject({
    weight: z.number().positive().max(1_000_000).optional().describe("Its share relative to the others' (default 1): weight 2 keeps twice as many units in flight."),
    maxInFlight: z.number().int().min(1).max(2_147_483_647).nullable().optional().describe("At most this many units dispatched, queued or processing; null: no limit."),
  })
  .refine((b) => b.weight !== undefined || b.maxInFlight !== undefined, { message: "expected weight and/or maxInFlight" });

export const listGroupsQuery = z.strictObject({
  limit: intParam({ min: 1, max: 1000, defaultValue: 100 }).describe("Groups per page, 1 to 1000 (default 100)."),
  after: groupName.optional().describe("The nextCursor of the previous page."),
});
