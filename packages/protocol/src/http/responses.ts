import { z } from "zod";
import { Utilization } from "../messages.ts";
import { UNIT_STATUSES, type UnitStatus } from "../statuses.ts";
import { CURSOR_PATTERN } from "./fields.ts";
import { callbackDelivery } from "./callbacks.ts";

/**
 * What the api answers. The api's handlers are type-checked against these (zod-openapi's
 * typed responses) and /openapi.json describes them; the CLI reads its answers as these
 * types. Timestamps are ISO strings.
 */
const time = z.iso.datetime();
/** Counts, ids and attempts: never negative. */
const count = z.number().int().min(0);
const id = z.number().int().min(1);
export const unitStatus = z.enum(UNIT_STATUSES).describe(`A unit's status: ${UNIT_STATUSES.join(", ")}.`);
const countOf = (what: string) => count.describe(what);

export const unitView = z
  .object({
    id: id.describe("The unit's id, assigned by the api."),
    kind: z.string().describe("What the unit is; agents consume by kind."),
    group: z.string().describe("Who the unit is for: dispatch shares fairly across groups."),
    priority: z.number().int().describe("Higher first."),
    payload: z.unknown().describe("The JSON the producer sent, as it was sent."),
    ref: z.string().nullable().describe("The producer's idempotency key; null when none was given."),
    status: unitStatus,
    attempt: countOf("Dispatches so far; every report carries the attempt it is about."),
    maxAttempts: count.min(1).describe("Attempts before a retryable error is final."),
    notBefore: time.nullable().describe("Pending, not ready until then: its retry backoff, or the delayed start it was enqueued with (runAt, delayMs)."),
    waitingForAgentSince: time.nullable().describe("Pending, waiting since then for an agent of its kind: it becomes ready when one starts (RTB_NO_AGENT_TIMEOUT_MS bounds the wait)."),
    dispatchedAt: time.nullable().describe("When the current attempt was dispatched."),
    result: z.unknown().describe("What the agent reported with success; null otherwise."),
    lastError: z.string().nullable().describe("The last error reported, if any."),
    republishes: countOf("Re-publishes of the current attempt by the reconciler without progress."),
    schedule: z
      .object({ name: z.string().describe("The schedule that made it."), occurrence: time.describe("The occurrence it was made for (its ref says the same).") })
      .nullable()
      .describe("The schedule and occurrence that made this unit; null for a unit a producer enqueued."),
    workflow: z
      .object({ id: id.describe("The workflow (GET /workflows/:id)."), step: z.string().describe("The step's name there.") })
      .nullable()
      .describe("The workflow this unit is a step of; null outside workflows."),
    waitingOn: count.nullable().describe("Blocked: how many of its dependencies are not yet satisfied; null for a unit without dependencies."),
    callbackUrl: z.string().nullable().describe("Where its end is POSTed; null: its group's callbackUrl, if any."),
    traceId: z
      .string()
      .regex(/^[0-9a-f]{32}$/)
      .nullable()
      .describe("The OpenTelemetry trace its attempts are spans of (the producer's traceparent's, or the one its enqueue started): look it up in your tracing backend; null when it has none."),
    createdAt: time.describe("When it was enqueued."),
    updatedAt: time.describe("When its row last changed."),
  })
  .describe("A unit of work and where it is.");
export type UnitView = z.output<typeof unitView>;

export const unitEvent = z
  .object({
    attempt: countOf("The attempt this event is about."),
    status: unitStatus,
    at: time.describe("When the reporting service saw it."),
    recordedAt: time.describe("When the api recorded it."),
    source: z.string().describe("api, reconciler, operator, leader:<id> or agent:<id>"),
    detail: z.unknown().describe("The error and retry decision, the result, or the operator's action; null when none."),
  })
  .describe("One applied transition of a unit.");
// An intersection, not unitView.extend: the document then refers to Unit (allOf) instead of
// writing its properties out a second time.
export const unitWithTimeline = z
  .intersection(
    unitView,
    z.object({
      events: z.array(unitEvent).describe("Every event of every attempt, oldest first."),
      callbacks: z.array(callbackDelivery).describe("The deliveries of its end to its callback URL (one per time it ended), oldest first, with each attempt."),
    }),
  )
  .describe("A unit with its timeline.");
export type UnitWithTimeline = z.output<typeof unitWithTimeline>;

export const errorBody = z
  .object({
    error: z.string().describe("invalid_request, not_found, conflict, payload_too_large, unsupported_media_type, unauthorized, cross_origin, database_unavailable, ..."),
    field: z.string().optional().describe("The request field at fault: a query parameter, `body`, or a path into it such as `[3].kind`."),
    message: z.string().describe("What is wrong, in words, and what is expected."),
    limit: count.optional().describe("413 for a payload: the most bytes its JSON may take."),
  })
  .describe("Every error the api answers.");
export type ErrorBody = z.output<typeof errorBody>;

export const enqueuedOne = z
  .object({ created: z.boolean().describe("false: the ref existed; this is that unit."), unit: unitView })
  .describe("One unit enqueued, or found by its ref.");
export type EnqueuedOne = z.output<typeof enqueuedOne>;
export const enqueuedBatch = z
  .object({
    created: countOf("Units inserted by this request."),
    existing: countOf("Entries whose ref already existed (or repeated an earlier entry's)."),
    units: z
      .array(
        z.object({
          id: id.describe("The unit's id."),
          ref: z.string().nullable().describe("Its ref, as sent."),
          status: unitStatus,
          created: z.boolean().describe("false: the ref existed; this is that unit."),
        }),
      )
      .describe("In request order."),
  })
  .describe("A batch enqueued.");
export type EnqueuedBatch = z.output<typeof enqueuedBatch>;
const backlog = z
  .object({
    ready: countOf("Pending and ready: what GET /next previews and the next top-up takes."),
    onClock: countOf("Pending until a time: delayed (runAt, delayMs) or waiting out a retry backoff (GET /units?waiting=clock lists them)."),
    forAgents: countOf("Pending until an agent of their kind starts (GET /units?waiting=agent)."),
    nextDueAt: time.nullable().describe("When the earliest unit on a clock is due; null when none waits on one."),
  })
  .describe("The pending units by what they wait for (ready + onClock + forAgents = the pending count), whatever the page's filters.");
/** The cursor of keyset pagination: a unit's id, as decimal text (ids may exceed 2^53 one day; JSON numbers would not say so). */
const unitCursor = z.string().regex(CURSOR_PATTERN);
export const unitPage = z
  .object({
    units: z.array(unitView).describe("Newest first."),
    nextCursor: unitCursor.nullable().describe("Pass as `after` for the next page; null on the last page."),
    backlog,
  })
  .describe("A page of units.");
export type UnitPage = z.output<typeof unitPage>;
export const unitActionResult = z.object({ unit: unitView }).describe("The unit as the action left it.");
export const conflictBody = errorBody.extend({ unit: unitView }).describe("The unit is not in a state the action applies to; `unit` shows it as it is.");
export const redriveResult = z.object({ retried: countOf("Units sent back to the backlog.") }).describe("What a redrive did.");
export const cancelResult = z
  .object({
    cancelled: countOf("Units cancelled by this request."),
    inFlight: countOf("Of those, units that were dispatched, queued or processing: the agents were told to drop or abort them."),
  })
  .describe("What a bulk cancel did.");
export type CancelResult = z.output<typeof cancelResult>;

const counts = z
  .object(Object.fromEntries(UNIT_STATUSES.map((s) => [s, countOf(`Units ${s} now.`)])) as Record<UnitStatus, typeof count>)
  .describe("Units per status, every status present.");
const instance = z
  .object({
    id: z.string().describe("The instance's id (RTB_LEADER_ID, RTB_AGENT_ID, or generated)."),
    startedAt: time.describe("When this process lifetime started."),
    lastSeen: time.describe("Its latest heartbeat, by the api's clock."),
    deadLettered: countOf("Messages this lifetime dead-lettered."),
  })
  .describe("One process lifetime.");
const perName = (what: string) => z.record(z.string(), count).describe(what);
const scheduleSummary = z
  .object({
    count: countOf("Schedules."),
    paused: countOf("Of which paused."),
    nextFireAt: time.nullable().describe("The earliest next occurrence of a schedule that is not paused; null when none."),
  })
  .describe("The schedules, in short (GET /schedules has them all).");

/** The duties done once across api replicas (db/src/duties.ts), in the order they are claimed. */
export const DUTY_NAMES = ["reconciler", "schedules", "retention", "tallies"] as const;
const dutyName = z.enum(DUTY_NAMES).describe("reconciler: the safety net's passes; schedules: firing them; retention: pruning; tallies: folding the counts' deltas.");

/** GET / counts the units due for pruning up to this many, so reading it stays cheap. */
export const PRUNE_DUE_CAP = 10_000;
const pruned = z.object({ units: countOf("Finished units deleted."), events: countOf("Their timeline events, deleted with them.") });
export const stateView = z
  .object({
    counts,
    total: countOf("Units in all."),
    outstanding: countOf("dispatched + queued: never above maxQueue"),
    maxQueue: countOf("RTB_BROADCAST_MAX_QUEUE"),
    backlog,

    dispatching: z.boolean().describe("Whether the api dispatches (/go turns it on, /pause off)."),
    dispatchingSince: time.nullable().describe("When dispatching last changed."),
    done: z.boolean().describe("Nothing blocked, pending or in flight."),
    leader: z
      .object({
        id: z.string().describe("The leader that routed last."),
        activeSince: time.nullable().describe("When it first reported after a different leader: the failover time."),
        reportedAt: time.describe("Its latest routing report."),
        utilization: Utilization.nullable().describe("The job queues as the leader last saw them."),
      })
      .nullable()
      .describe("The active leader; null before any leader has routed."),
    services: z
      .object({
        apis: z.array(instance).describe("api instances."),
        leaders: z.array(instance).describe("Leader instances."),
        agents: z.array(instance).describe("Agent instances."),
      })
      .describe("Lifetimes seen in the last 30 s."),
    duties: z
      .object({
        thisApi: z.string().describe("This api's id (RTB_API_ID): the holder its leases name."),
        heldByThisApi: z.array(dutyName).describe("The duties this api holds now."),
        leases: z
          .array(
            z.object({
              duty: dutyName,
              holder: z.string().nullable().describe("The api holding it; null when its lease ran out (its holder died or stopped): the next api to look takes it."),
              lastHolder: z.string().describe("The api that held it last."),
              since: time.describe("When the last holder took it."),
              expiresAt: time.describe("When its lease runs out unless renewed (every third of RTB_DUTY_LEASE_MS)."),
              handovers: countOf("Times it passed from one api to another."),
            }),
          )
          .describe("Every duty ever held, in the order reconciler, schedules, retention, tallies."),
      })
      .describe("Work done once across api replicas, each duty by one api at a time under a lease (RTB_DUTY_LEASE_MS), handed over when its holder dies."),
    deadLetters: z
      .object({
        waiting: count.nullable().describe("Messages in the dead-letter queue; null when the broker cannot be asked."),
        byService: perName("Dead-lettered in all, per service."),
        rejectedByThisApi: perName("Inbox messages this api dead-lettered, by reason."),
      })
      .describe("Messages that could not be handled."),
    reports: z
      .object({ applied: countOf("Status reports applied by this api."), ignored: perName("Reports ignored, by reason (stale_attempt, not_forward, ...).") })
      .describe("What this api did with the reports it consumed."),
    publishes: z
      .object({
        dispatched: countOf("Units this api dispatched."),
        republished: countOf("Units the reconciler re-published."),
        unconfirmed: countOf("Publishes the broker did not confirm."),
        refused: countOf("Units ended as permanent errors: too large for any broker message (RTB_BROKER_MAX_MESSAGE_BYTES)."),
      })
      .describe("This api's publishes to the outbox."),
    broker: z
      .object({
        connected: z.boolean().describe("Whether this api's broker connections are up."),
        reconnects: countOf("Reconnects since start."),
        hosts: z
          .object({
            consume: z.string().nullable().describe("The RTB_BROKER_HOST entry the consuming connection is on (host:port); null while it is down."),
            publish: z.string().nullable().describe("The RTB_BROKER_HOST entry the publishing connection is on; null while it is down."),
          })
          .describe("Where each of the two connections is: with a cluster listed, the node it failed over to."),
      })
      .describe("This api's broker connection."),
    waitingForAgents: z
      .array(z.object({ kind: z.string().describe("The kind no agent consumes yet."), since: time.describe("When its first waiting unit found no agent.") }))
      .describe("Kinds with units waiting for an agent (no job queue when dispatched: no agent consumes them yet), longest waiting first, at most 100. They wait without using attempts until an agent of the kind starts, at most RTB_NO_AGENT_TIMEOUT_MS."),
    schedules: scheduleSummary,
    workflows: z
      .object({ running: countOf("Workflows with a step not finished (GET /workflows?status=running lists them).") })
      .describe("Workflows (POST /workflows): their steps are counted in `counts` like any unit, blocked ones as `blocked`."),
    retention: z
      .object({
        setting: z.string().describe("RTB_RETENTION as this api was started with (7d, 12h, 30m, 90s); 0 keeps everything."),
        retentionMs: countOf("The same in milliseconds; 0 keeps everything."),
        pruned: pruned.describe("Pruned in all, by every replica in every lifetime (kept in the database). `total` no longer counts these units."),
        prunedByThisApi: pruned.describe("Pruned by this api since it started."),
        lastRunAt: time.nullable().describe("The last pass of any replica, whether it found anything to prune or not; null: none yet."),
        lastRunBy: z.string().nullable().describe("The api replica (RTB_API_ID) that ran it."),
        due: count
          .nullable()
          .describe(`Finished units older than the retention not pruned yet, counted up to ${PRUNE_DUE_CAP} (that number means at least as many); null when nothing is pruned (setting 0).`),
      })
      .describe("Finished units (success, error, cancelled) and their events are deleted once they finished longer ago than RTB_RETENTION."),
  })
  .describe("The state of things.");
export type StateView = z.output<typeof stateView>;

export const nextResult = z
  .object({
    limit: count.min(1).describe("How many were asked for."),
    units: z
      .array(
        z.object({
          id: id.describe("The unit's id."),
          kind: z.string().describe("Its kind."),
          group: z.string().describe("Its group."),
          priority: z.number().int().describe("Its priority."),
          attempt: countOf("Dispatches so far."),
          createdAt: time.describe("When it was enqueued."),
        }),
      )
      .describe("The next units, in dispatch order."),
  })
  .describe("The backlog in dispatch order.");
export type NextResult = z.output<typeof nextResult>;
const since = time.nullable().describe("When dispatching last changed.");
const changed = z.boolean().describe("false: it already was.");
export const goResult = z
  .object({
    dispatching: z.literal(true).describe("Dispatching is on."),
    changed,
    since,
    dispatchedNow: countOf("Units the top-up dispatched right away."),
    message: z.string().describe("The same, in words."),
  })
  .describe("Dispatching is on.");
export type GoResult = z.output<typeof goResult>;
export const pauseResult = z
  .object({
    dispatching: z.literal(false).describe("Dispatching is off."),
    changed,
    since,
    inFlight: countOf("Units still in flight; they finish."),
    message: z.string().describe("The same, in words."),
  })
  .describe("Dispatching is off.");
export type PauseResult = z.output<typeof pauseResult>;

export const groupView = z
  .object({
    name: z.string().describe("The group's name."),
    weight: z.number().positive().describe("Its share relative to the others' (default 1)."),
    maxInFlight: count.min(1).nullable().describe("At most this many units in flight; null: no limit."),
    callbackUrl: z.string().nullable().describe("Where the ends of its units that name no callbackUrl are POSTed; null: none."),
    ready: countOf("Pending units past any retry backoff."),
    inFlight: countOf("dispatched + queued + processing"),
  })
  .describe("A group's fair share, and where its units are.");
export type GroupView = z.output<typeof groupView>;
export const groupPage = z
  .object({ groups: z.array(groupView).describe("By name."), nextCursor: z.string().nullable().describe("Pass as `after` for the next page; null on the last page.") })
  .describe("A page of groups.");
export type GroupPage = z.output<typeof groupPage>;

export const scheduleView = z
  .object({
    name: z.string().describe("The schedule's name."),
    cron: z.string().describe("The cron expression, as given."),
    timeZone: z.string().describe("The IANA time zone the expression is read in."),
    unit: z
      .object({
        kind: z.string().describe("Its kind."),
        group: z.string().describe("Its group."),
        priority: z.number().int().describe("Its priority."),
        payload: z.unknown().describe("Its payload, as given."),
        maxAttempts: count.min(1).describe("Its attempts."),
      })
      .describe("The unit each occurrence enqueues."),
    missed: z.string().describe("What is done with missed occurrences: skip, once or each:N."),
    paused: z.boolean().describe("Paused: it fires nothing until resumed."),
    pausedAt: time.nullable().describe("When it was paused; null when it is not."),
    nextFireAt: time.nullable().describe("Its next occurrence, by the database's clock; null while paused."),
    nextFireTimes: z.array(time).describe("Its next occurrences (up to 5), the first being nextFireAt; empty while paused."),
    lastFired: z
      .object({
        occurrence: time.describe("The latest occurrence that enqueued a unit."),
        unitId: id.describe("The unit it enqueued."),
        at: time.describe("When it was enqueued (the database's clock)."),
      })
      .nullable()
      .describe("The latest occurrence fired; null before the first."),
    fired: countOf("Units this schedule has enqueued."),
    skipped: countOf("Missed occurrences it skipped (by its missed policy)."),
    createdAt: time.describe("When it was created."),
    updatedAt: time.describe("When its definition, or its paused state, last changed."),
  })
  .describe("A schedule: a unit enqueued at each occurrence of a cron expression.");
export type ScheduleView = z.output<typeof scheduleView>;
export const schedulePage = z
  .object({ schedules: z.array(scheduleView).describe("By name."), nextCursor: z.string().nullable().describe("Pass as `after` for the next page; null on the last page.") })
  .describe("A page of schedules.");
export type SchedulePage = z.output<typeof schedulePage>;

export const liveness = z.object({ ok: z.literal(true).describe("The process answers.") }).describe("Alive.");
export const readiness = z
  .object({
    ready: z.boolean().describe("All of the below."),
    database: z.boolean().describe("PostgreSQL answers."),
    broker: z.boolean().describe("The broker connections are up."),
    inbox: z.boolean().describe("false once the inbox has been unable to apply reports for 5 s."),
  })
  .describe("Whether this api can do its work.");

/**
 * The schemas /openapi.json names in components.schemas (and refers to by $ref) instead of
 * writing them out at every use. Plain zod: the api gives them their names for the generator.
 */
export const httpComponents = {
  Unit: unitView,
  UnitWithTimeline: unitWithTimeline,
  UnitEvent: unitEvent,
  UnitStatus: unitStatus,
  Error: errorBody,
  Group: groupView,
  Schedule: scheduleView,
  State: stateView,
} as const;
