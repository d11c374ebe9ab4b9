import { z } from "zod";
import { UNIT_STATUSES } from "@rtb/protocol";
import { intParam, storableText } from "./validation.ts";

/**
 * Every request and response shape of the api, as zod schemas: request schemas validate (and
 * type) what handlers see; all of them feed /openapi.json (openapi.ts).
 */

/** The same rule as the database's CHECK on units.kind: a kind is also a routing key. */
export const KIND = /^[A-Za-z0-9_.-]{1,100}$/;

export interface RequestLimits {
  /** RTB_API_MAX_BATCH: units in one POST /units. */
  maxBatch: number;
  /** RTB_MAX_ATTEMPTS: a unit's attempts when the request does not say. */
  maxAttempts: number;
}

const kind = z.string().regex(KIND, { message: "expected 1 to 100 letters, digits, '_', '.' or '-'" }).describe("What the unit is; agents consume by kind.");
const group = storableText(z.string().min(1).max(200)).describe("Who the unit is for (a customer, a tenant): dispatch shares fairly across groups.");
export const groupName = group;

export function unitSchemas(limits: RequestLimits) {
  const newUnit = z
    .strictObject({
      kind,
      group: group.default("default"),
      priority: z.number().int().min(-1_000_000).max(1_000_000).default(0).describe("Higher first."),
      payload: z.unknown().default({}).describe("Any JSON; handed to the agent as it is."),
      ref: storableText(z.string().min(1).max(200))
        .optional()
        .describe("Your idempotency key: POST the same ref again and you get the existing unit back, never a second one."),
      maxAttempts: z.number().int().min(1).max(1000).default(limits.maxAttempts).describe("Attempts before a retryable error is final (RTB_MAX_ATTEMPTS)."),
    })
    .describe("A unit to enqueue.");
  const batch = z
    .array(newUnit)
    .min(1, { message: "expected at least one unit" })
    .max(limits.maxBatch, { message: `expected at most ${limits.maxBatch} units per request (RTB_API_MAX_BATCH); send several requests` })
    .describe(`Up to ${limits.maxBatch} units, inserted in one statement, in this order.`);
  return { newUnit, batch };
}

const statusList = z
  .string()
  .transform((v, ctx) => {
    const wanted = v.split(",").map((s) => s.trim()).filter(Boolean);
    const unknown = wanted.filter((s) => !(UNIT_STATUSES as readonly string[]).includes(s));
    if (unknown.length > 0 || wanted.length === 0) {
      ctx.addIssue({ code: "custom", message: `unknown status '${unknown[0] ?? v}'; expected one or more of ${UNIT_STATUSES.join(", ")}, comma-separated` });
      return z.NEVER;
    }
    return wanted as (typeof UNIT_STATUSES)[number][];
  })
  .describe(`Comma-separated: ${UNIT_STATUSES.join(", ")}.`);

export const listUnitsQuery = z.strictObject({
  status: statusList.optional(),
  kind: kind.optional(),
  group: group.optional(),
  stuck: z
    .enum(["true", "false"], { message: "expected true or false" })
    .transform((v) => v === "true")
    .optional()
    .describe("true: only units in flight for longer than their timeout (RTB_DISPATCH_TIMEOUT_MS, RTB_PROCESSING_TIMEOUT_MS)."),
  limit: intParam({ min: 1, max: 1000, defaultValue: 50 }).describe("Units per page, 1 to 1000 (default 50)."),
  after: intParam({ min: 1, max: Number.MAX_SAFE_INTEGER }).optional().describe("The nextCursor of the previous page."),
});

export const idParam = z.object({ id: intParam({ min: 1, max: Number.MAX_SAFE_INTEGER }).describe("The unit's id.") });

export const redriveBody = z
  .strictObject({ kind: kind.optional(), group: group.optional() })
  .describe("Optional filters; an empty body redrives every errored unit.");

export const nextQuery = z.strictObject({ limit: intParam({ min: 1, max: 1000, defaultValue: 10 }).describe("How many, 1 to 1000 (default 10).") });

// Responses (documentation only: the handlers build them).
const time = z.iso.datetime();
export const unitView = z.object({
  id: z.number().int(),
  kind: z.string(),
  group: z.string(),
  priority: z.number().int(),
  payload: z.unknown(),
  ref: z.string().nullable(),
  status: z.enum(UNIT_STATUSES),
  attempt: z.number().int().describe("Dispatches so far; every report carries the attempt it is about."),
  maxAttempts: z.number().int(),
  notBefore: time.nullable().describe("Pending, waiting for its retry backoff until then."),
  dispatchedAt: time.nullable(),
  result: z.unknown(),
  lastError: z.string().nullable(),
  republishes: z.number().int().describe("Re-publishes of the current attempt by the reconciler without progress."),
  createdAt: time,
  updatedAt: time,
});
export const unitWithTimeline = unitView.extend({
  events: z.array(
    z.object({
      attempt: z.number().int(),
      status: z.string(),
      at: time.describe("When the reporting service saw it."),
      recordedAt: time,
      source: z.string().describe("api, reconciler, operator, leader:<id> or agent:<id>"),
      detail: z.unknown(),
    }),
  ),
});
export const errorBody = z.object({
  error: z.string().describe("invalid_request, not_found, conflict, payload_too_large, unsupported_media_type, unauthorized, cross_origin, database_unavailable, ..."),
  field: z.string().optional().describe("The request field at fault: a query parameter, `body`, or a path into it such as `[3].kind`."),
  message: z.string(),
  limit: z.number().int().optional().describe("413 for a payload: the most bytes its JSON may take."),
});
export const enqueuedOne = z.object({ created: z.boolean().describe("false: the ref existed; this is that unit."), unit: unitView });
export const enqueuedBatch = z.object({
  created: z.number().int(),
  existing: z.number().int().describe("Entries whose ref already existed (or repeated an earlier entry's)."),
  units: z.array(z.object({ id: z.number().int(), ref: z.string().nullable(), status: z.enum(UNIT_STATUSES), created: z.boolean() })).describe("In request order."),
});
export const unitPage = z.object({
  units: z.array(unitView).describe("Newest first."),
  nextCursor: z.string().nullable().describe("Pass as `after` for the next page; null on the last page."),
});
export const unitActionResult = z.object({ unit: unitView });
export const conflictBody = errorBody.extend({ unit: unitView });
export const redriveResult = z.object({ retried: z.number().int().describe("Units sent back to the backlog.") });

const counts = z.object(Object.fromEntries(UNIT_STATUSES.map((s) => [s, z.number().int()])) as Record<(typeof UNIT_STATUSES)[number], z.ZodNumber>);
const instance = z.object({ id: z.string(), startedAt: time, lastSeen: time, deadLettered: z.number().int() });
export const stateView = z.object({
  counts,
  total: z.number().int(),
  outstanding: z.number().int().describe("dispatched + queued: never above maxQueue"),
  maxQueue: z.number().int().describe("RTB_BROADCAST_MAX_QUEUE"),
  dispatching: z.boolean(),
  dispatchingSince: time.nullable(),
  done: z.boolean().describe("Nothing pending or in flight."),
  leader: z.object({ id: z.string(), activeSince: time.nullable(), reportedAt: time, utilization: z.unknown() }).nullable(),
  services: z.object({ apis: z.array(instance), leaders: z.array(instance), agents: z.array(instance) }).describe("Lifetimes seen in the last 30 s."),
  deadLetters: z.object({ waiting: z.number().int().nullable(), byService: z.record(z.string(), z.number().int()), rejectedByThisApi: z.record(z.string(), z.number().int()) }),
  reports: z.object({ applied: z.number().int(), ignored: z.record(z.string(), z.number().int()) }),
  publishes: z.object({ dispatched: z.number().int(), republished: z.number().int(), unconfirmed: z.number().int(), refused: z.number().int().describe("Units ended as permanent errors: too large for any broker message (RTB_BROKER_MAX_MESSAGE_BYTES).") }),
  broker: z.object({ connected: z.boolean(), reconnects: z.number().int() }),
});
export const nextResult = z.object({
  limit: z.number().int(),
  units: z.array(z.object({ id: z.number().int(), kind: z.string(), group: z.string(), priority: z.number().int(), attempt: z.number().int(), createdAt: time })),
});
export const goResult = z.object({ dispatching: z.literal(true), changed: z.boolean(), since: time.nullable(), dispatchedNow: z.number().int(), message: z.string() });
export const pauseResult = z.object({ dispatching: z.literal(false), changed: z.boolean(), since: time.nullable(), inFlight: z.number().int(), message: z.string() });

export const groupBody = z
  .strictObject({
    weight: z.number().positive().max(1_000_000).optional().describe("Its share relative to the others' (default 1): weight 2 keeps twice as many units in flight."),
    maxInFlight: z.number().int().min(1).max(2_147_483_647).nullable().optional().describe("At most this many units dispatched, queued or processing; null: no limit."),
  })
  .refine((b) => b.weight !== undefined || b.maxInFlight !== undefined, { message: "expected weight and/or maxInFlight" });
export const groupView = z.object({
  name: z.string(),
  weight: z.number(),
  maxInFlight: z.number().int().nullable(),
  ready: z.number().int().describe("Pending units past any retry backoff."),
  inFlight: z.number().int().describe("dispatched + queued + processing"),
});
export const groupPage = z.object({ groups: z.array(groupView), nextCursor: z.string().nullable().describe("Pass as `after` for the next page.") });
export const listGroupsQuery = z.strictObject({
  limit: intParam({ min: 1, max: 1000, defaultValue: 100 }).describe("Groups per page, 1 to 1000 (default 100)."),
  after: group.optional().describe("The nextCursor of the previous page."),
});
