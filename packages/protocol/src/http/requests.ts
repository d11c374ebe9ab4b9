import { z } from "zod";
import { SCHEDULE_REF_PREFIX, scheduleNameSchema } from "../names.ts";
import { CANCELLABLE } from "../statuses.ts";
import { groupName, intParam, statusList, storableText, unitKind, unitRef } from "./fields.ts";
import { failurePolicy, MAX_WORKFLOW_STEPS } from "../workflows.ts";
import { callbackUrlField, type CallbackUrlCheck } from "./callbacks.ts";

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
  /** The api's rules for a callbackUrl (RTB_WEBHOOK_ALLOWED_HOSTS); absent: callbacks are off, every callbackUrl refused. */
  callbackUrl?: CallbackUrlCheck | undefined;
}

/** The longest a unit may be delayed (runAt or delayMs): 366 days. */
export const MAX_DELAY_MS = 366 * 24 * 60 * 60 * 1000;

/**
 * What a unit is made of, as a producer says it: POST /units takes these (and its ref and
 * delay), and a schedule's `unit` takes exactly these.
 */
export function unitFields(limits: Pick<RequestLimits, "maxAttempts">) {
  return {
    kind: unitKind,
    group: groupName.default("default"),
    priority: z.number().int().min(-1_000_000).max(1_000_000).default(0).describe("Higher first."),
    // The metadata: a generator leaves an unknown's default out of the document.
    payload: z.unknown().default({}).meta({ default: {} }).describe("Any JSON; handed to the agent as it is."),
    maxAttempts: z.number().int().min(1).max(1000).default(limits.maxAttempts).describe("Attempts before a retryable error is final (RTB_MAX_ATTEMPTS)."),
  };
}

/** POST /units: one unit, or a batch; their bounds and defaults come from the configuration. */
export function unitSchemas(limits: RequestLimits) {
  const newUnit = z
    .strictObject({
      ...unitFields(limits),
      ref: unitRef
        .refine((r) => !r.startsWith(SCHEDULE_REF_PREFIX), { message: `refs starting with "${SCHEDULE_REF_PREFIX}" are the schedules' own (a scheduled unit's ref names its occurrence); choose another` })
        .optional()
        .describe(`Your idempotency key: POST the same ref again and you get the existing unit back, never a second one. Refs starting with "${SCHEDULE_REF_PREFIX}" are reserved for the units schedules make.`),
      runAt: z.iso
        .datetime({ offset: true, message: "expected an ISO 8601 time with its offset, e.g. 2027-01-31T09:00:00Z" })
        .optional()
        .describe("Not before then: the unit is pending but not ready until this time (a time in the past means now; at most 366 days ahead)."),
      delayMs: z.number().int().min(0).max(MAX_DELAY_MS).optional().describe("Not before this many milliseconds from now (the database's clock); at most 366 days. Give runAt or delayMs, not both."),
      dependsOn: z
        .array(z.union([z.number().int().positive(), unitRef], { message: "expected a unit's id (a number) or its ref (a string)" }))
        .max(MAX_WORKFLOW_STEPS, { message: `expected at most ${MAX_WORKFLOW_STEPS} dependencies` })
        .optional()
        .describe(
          "Units this one waits for, by id or by ref (an existing unit, or an earlier entry of the same batch): it is blocked until each succeeded, " +
            "and is dispatched with their results (by ref, else by id). For workflows of named steps, POST /workflows.",
        ),
      onFailure: failurePolicy.optional().describe("With dependsOn: what a dependency ending in error or cancelled does to this unit (default cancel)."),
      callbackUrl: callbackUrlField(limits.callbackUrl).optional(),
    })
    .superRefine((u, ctx) => {
      if (u.onFailure !== undefined && u.dependsOn === undefined) ctx.addIssue({ code: "custom", path: ["onFailure"], message: "onFailure applies to dependsOn: give both" });
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
  schedule: scheduleNameSchema.optional().describe("Only the units this schedule made."),
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

const cancellableWords = `one of ${CANCELLABLE.join(", ")} (finished units cannot be cancelled)`;
const cancellableStatus = z.enum(CANCELLABLE, { message: `expected ${cancellableWords}` });

/** POST /units/cancel: the units to cancel, by filter; at least one filter, so that an empty body cancels nothing. */
export const cancelBody = z
  .strictObject({
    kind: unitKind.optional(),
    group: groupName.optional(),
    status: z
      .union([cancellableStatus, z.array(cancellableStatus).min(1, { message: "expected at least one status" })], { message: `expected ${cancellableWords}, or an array of them` })
      .optional()
      .describe(`Only units in this status (or these): ${cancellableWords}. Default: all of them.`),
  })
  .refine((b) => b.kind !== undefined || b.group !== undefined || b.status !== undefined, {
    message: "expected kind, group and/or status: a bulk cancel names what it cancels",
  })
  .describe("Which units to cancel: those of this kind, of this group, in this status, all given filters together.");
export type CancelFilterInput = z.input<typeof cancelBody>;

export const nextQuery = z.strictObject({ limit: intParam({ min: 1, max: 1000, defaultValue: 10 }).describe("How many, 1 to 1000 (default 10).") });

export const groupParam = z.object({ name: groupName });

export const groupBody = (limits: Pick<RequestLimits, "callbackUrl"> = {}) => z
  .strictObject({
    weight: z.number().positive().max(1_000_000).optional().describe("Its share relative to the others' (default 1): weight 2 keeps twice as many units in flight."),
    maxInFlight: z.number().int().min(1).max(2_147_483_647).nullable().optional().describe("At most this many units dispatched, queued or processing; null: no limit."),
    callbackUrl: callbackUrlField(limits.callbackUrl).nullable().optional().describe("Where the ends of its units that name no callbackUrl are POSTed; null: none."),
  })
  .refine((b) => b.weight !== undefined || b.maxInFlight !== undefined || b.callbackUrl !== undefined, { message: "expected weight, maxInFlight and/or callbackUrl" });

export const listGroupsQuery = z.strictObject({
  limit: intParam({ min: 1, max: 1000, defaultValue: 100 }).describe("Groups per page, 1 to 1000 (default 100)."),
  after: groupName.optional().describe("The nextCursor of the previous page."),
});

/** The most missed occurrences `each:N` runs after one gap. */
export const MAX_MISSED_EACH = 1000;
/** `skip`, `once` or `each:N` (N from 1 to MAX_MISSED_EACH). */
export const MISSED_PATTERN = /^(skip|once|each:([1-9][0-9]{0,3}))$/;

/** What a schedule does with the occurrences missed while nothing fired (the api down, the schedule paused). */
export const missedPolicy = z
  .string()
  .regex(MISSED_PATTERN, { message: `expected skip, once or each:N (N from 1 to ${MAX_MISSED_EACH})` })
  .refine((v) => !v.startsWith("each:") || Number(v.slice(5)) <= MAX_MISSED_EACH, { message: `expected skip, once or each:N (N from 1 to ${MAX_MISSED_EACH})` })
  .describe(
    "Occurrences missed (more than RTB_SCHEDULE_GRACE_MS late: the api was down, or the schedule paused): skip (none of them runs), " +
      `once (one unit, for the latest), each:N (one unit for each of the latest N, at most ${MAX_MISSED_EACH}). The rest are skipped and counted.`,
  );
export type MissedPolicy = { policy: "skip" } | { policy: "once" } | { policy: "each"; max: number };

/** `each:5` -> { policy: "each", max: 5 }; the text must have passed `missedPolicy`. */
export function parseMissed(text: string): MissedPolicy {
  if (text === "skip" || text === "once") return { policy: text };
  return { policy: "each", max: Number(text.slice("each:".length)) };
}

export const scheduleName = scheduleNameSchema.describe("The schedule's name (it names its units' refs: schedule:<name>@<occurrence>).");

/** POST /schedules and PUT /schedules/:name (without `name`, which the path gives). */
export function scheduleSchemas(limits: Pick<RequestLimits, "maxAttempts">) {
  const definition = {
    cron: storableText(z.string().min(1).max(200)).describe(
      "When it fires: a cron expression of 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first), as in crontab (`0 9 * * 1-5`, `*/10 * * * * *`), read in timeZone.",
    ),
    timeZone: storableText(z.string().min(1).max(100)).default("UTC").describe("An IANA time zone (`Europe/Paris`) the cron expression is read in; default UTC. Daylight saving time is followed: 09:00 stays 09:00 on the wall clock."),
    unit: z.strictObject(unitFields(limits)).describe("The unit each occurrence enqueues."),
    missed: missedPolicy.default("skip"),
  };
  const create = z
    .strictObject({ name: scheduleName, ...definition, paused: z.boolean().default(false).describe("Created paused: it fires nothing until resumed.") })
    .describe("A schedule: a unit enqueued at each occurrence of a cron expression.");
  const replace = z
    .strictObject({ ...definition, paused: z.boolean().optional().describe("Pause or resume it too; left out, it stays as it is.") })
    .describe("The schedule's new definition, whole (what is left out takes its default, but paused). Its name, what it fired and its counts stay.");
  return { create, replace };
}
type ScheduleSchemas = ReturnType<typeof scheduleSchemas>;
/** A schedule as a client writes it (the defaults left out). */
export type NewScheduleInput = z.input<ScheduleSchemas["create"]>;
export type ParsedNewSchedule = z.output<ScheduleSchemas["create"]>;
export type ParsedScheduleDefinition = z.output<ScheduleSchemas["replace"]>;

export const scheduleParam = z.object({ name: scheduleName });

export const listSchedulesQuery = z.strictObject({
  limit: intParam({ min: 1, max: 1000, defaultValue: 100 }).describe("Schedules per page, 1 to 1000 (default 100)."),
  after: scheduleNameSchema.optional().describe("The nextCursor of the previous page."),
});
