import { z } from "zod";
import { Utilization } from "../messages.ts";
import { UNIT_STATUSES, type UnitStatus } from "../statuses.ts";

/**
 * What the api answers. The api's handlers are type-checked against these (zod-openapi's
 * typed responses) and /openapi.json describes them; the CLI reads its answers as these
 * types. Timestamps are ISO strings.
 */
const time = z.iso.datetime();
const count = z.number().int();
const status = z.enum(UNIT_STATUSES);

export const unitView = z.object({
  id: count,
  kind: z.string(),
  group: z.string(),
  priority: count,
  payload: z.unknown(),
  ref: z.string().nullable(),
  status,
  attempt: count.describe("Dispatches so far; every report carries the attempt it is about."),
  maxAttempts: count,
  notBefore: time.nullable().describe("Pending, waiting for its retry backoff until then."),
  waitingForAgentSince: time.nullable().describe("Pending, waiting since then for an agent of its kind: it becomes ready when one starts (RTB_NO_AGENT_TIMEOUT_MS bounds the wait)."),
  dispatchedAt: time.nullable(),
  result: z.unknown(),
  lastError: z.string().nullable(),
  republishes: count.describe("Re-publishes of the current attempt by the reconciler without progress."),
  createdAt: time,
  updatedAt: time,
});
export type UnitView = z.output<typeof unitView>;

export const unitEvent = z.object({
  attempt: count,
  status: z.string(),
  at: time.describe("When the reporting service saw it."),
  recordedAt: time,
  source: z.string().describe("api, reconciler, operator, leader:<id> or agent:<id>"),
  detail: z.unknown(),
});
export const unitWithTimeline = unitView.extend({ events: z.array(unitEvent) });
export type UnitWithTimeline = z.output<typeof unitWithTimeline>;

export const errorBody = z.object({
  error: z.string().describe("invalid_request, not_found, conflict, payload_too_large, unsupported_media_type, unauthorized, cross_origin, database_unavailable, ..."),
  field: z.string().optional().describe("The request field at fault: a query parameter, `body`, or a path into it such as `[3].kind`."),
  message: z.string(),
  limit: count.optional().describe("413 for a payload: the most bytes its JSON may take."),
});
export type ErrorBody = z.output<typeof errorBody>;

export const enqueuedOne = z.object({ created: z.boolean().describe("false: the ref existed; this is that unit."), unit: unitView });
export type EnqueuedOne = z.output<typeof enqueuedOne>;
export const enqueuedBatch = z.object({
  created: count,
  existing: count.describe("Entries whose ref already existed (or repeated an earlier entry's)."),
  units: z.array(z.object({ id: count, ref: z.string().nullable(), status, created: z.boolean() })).describe("In request order."),
});
export type EnqueuedBatch = z.output<typeof enqueuedBatch>;
export const unitPage = z.object({
  units: z.array(unitView).describe("Newest first."),
  nextCursor: z.string().nullable().describe("Pass as `after` for the next page; null on the last page."),
});
export type UnitPage = z.output<typeof unitPage>;
export const unitActionResult = z.object({ unit: unitView });
export const conflictBody = errorBody.extend({ unit: unitView });
export const redriveResult = z.object({ retried: count.describe("Units sent back to the backlog.") });

const counts = z.object(Object.fromEntries(UNIT_STATUSES.map((s) => [s, count])) as Record<UnitStatus, typeof count>);
const instance = z.object({ id: z.string(), startedAt: time, lastSeen: time, deadLettered: count });
export const stateView = z.object({
  counts,
  total: count,
  outstanding: count.describe("dispatched + queued: never above maxQueue"),
  maxQueue: count.describe("RTB_BROADCAST_MAX_QUEUE"),
  dispatching: z.boolean(),
  dispatchingSince: time.nullable(),
  done: z.boolean().describe("Nothing pending or in flight."),
  leader: z
    .object({ id: z.string(), activeSince: time.nullable(), reportedAt: time, utilization: Utilization.nullable().describe("The job queues as the leader last saw them.") })
    .nullable(),
  services: z.object({ apis: z.array(instance), leaders: z.array(instance), agents: z.array(instance) }).describe("Lifetimes seen in the last 30 s."),
  deadLetters: z.object({ waiting: count.nullable(), byService: z.record(z.string(), count), rejectedByThisApi: z.record(z.string(), count) }),
  reports: z.object({ applied: count, ignored: z.record(z.string(), count) }),
  publishes: z.object({
    dispatched: count,
    republished: count,
    unconfirmed: count,
    refused: count.describe("Units ended as permanent errors: too large for any broker message (RTB_BROKER_MAX_MESSAGE_BYTES)."),
  }),
  broker: z.object({ connected: z.boolean(), reconnects: count }),
  waitingForAgents: z
    .array(z.object({ kind: z.string(), since: time.describe("When its first waiting unit found no agent.") }))
    .describe("Kinds with units waiting for an agent (no job queue when dispatched: no agent consumes them yet), longest waiting first, at most 100. They wait without using attempts until an agent of the kind starts, at most RTB_NO_AGENT_TIMEOUT_MS."),
});
export type StateView = z.output<typeof stateView>;

export const nextResult = z.object({
  limit: count,
  units: z.array(z.object({ id: count, kind: z.string(), group: z.string(), priority: count, attempt: count, createdAt: time })),
});
export type NextResult = z.output<typeof nextResult>;
export const goResult = z.object({ dispatching: z.literal(true), changed: z.boolean(), since: time.nullable(), dispatchedNow: count, message: z.string() });
export type GoResult = z.output<typeof goResult>;
export const pauseResult = z.object({ dispatching: z.literal(false), changed: z.boolean(), since: time.nullable(), inFlight: count, message: z.string() });
export type PauseResult = z.output<typeof pauseResult>;

export const groupView = z.object({
  name: z.string(),
  weight: z.number(),
  maxInFlight: count.nullable(),
  ready: count.describe("Pending units past any retry backoff."),
  inFlight: count.describe("dispatched + queued + processing"),
});
export const groupPage = z.object({ groups: z.array(groupView), nextCursor: z.string().nullable().describe("Pass as `after` for the next page.") });

export const liveness = z.object({ ok: z.literal(true) });
export const readiness = z.object({ ready: z.boolean(), database: z.boolean(), broker: z.boolean(), inbox: z.boolean() });
