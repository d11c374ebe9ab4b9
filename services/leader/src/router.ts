import {
  createStatusReporter,
  jsonBytes,
  messagingAttributes,
  MessageTooLargeError,
  noTracing,
  splitBySize,
  startConsumer,
  traceField,
  traceHeaders,
  unitAttributes,
  type Broker,
  type Consumer,
  type Delivery,
  type Heartbeat,
  type HopSpan,
  type Logger,
  type Publisher,
  type Tracing,
} from "@rtb/runtime";
import { encodeMessage, parseDispatch, type DispatchedUnit, type JobUnit, type StatusUpdate } from "@rtb/protocol";
import type { Tracker } from "./tracker.ts";
import { unitsPerJob } from "./job-size.ts";
import type { LeaderMetrics } from "./leader-metrics.ts";
import type { LeaderStats } from "./leader-stats.ts";

interface PlannedJob {
  kind: string;
  /** Indexes of its units in the dispatch message. */
  members: number[];
  units: DispatchedUnit[];
  /** The message id: unique per delivery and job, so returns are told apart. */
  id: string;
  body: Buffer;
}

function jobUnit(u: DispatchedUnit): JobUnit {
  const unit: JobUnit = { unitId: u.unitId, attempt: u.attempt, payload: u.payload };
  if (u.deps !== undefined) unit.deps = u.deps;
  if (u.traceparent !== undefined) unit.traceparent = u.traceparent;
  return unit;
}

/** A job's body: the single form for one unit (agents of every version read it), the batch form for more. */
export function encodeJob(kind: string, units: readonly DispatchedUnit[]): Buffer {
  if (units.length === 1) {
    const u = units[0]!;
    return encodeMessage({ v: 1, type: "job", kind, ...jobUnit(u) });
  }
  return encodeMessage({ v: 1, type: "job", kind, units: units.map(jobUnit) });
}

const batchOverhead = (kind: string) => encodeMessage({ v: 1, type: "job", kind, units: [] }).length;

/**
 * The leader's one job: take a dispatch message from the outbox (single active consumer, so
 * one leader is active and the others stand by), publish its units as jobs into `rtb.jobs`
 * by kind (one unit per job, or several while the kind's queue is deep: job-size.ts) (mandatory: a kind that no agent has bound comes back), report `queued` (or the
 * unroutable error) to the inbox, and only then ack the outbox message. A crash anywhere
 * before the ack redelivers the message: jobs may be duplicated, never lost.
 */
export async function startRouter(deps: {
  broker: Broker;
  publisher: Publisher;
  tracker: Tracker;
  heartbeat: Heartbeat;
  logger: Logger;
  prefetch: number;
  /** RTB_BROKER_MAX_MESSAGE_BYTES */
  maxMessageBytes: number;
  /** RTB_JOB_MAX_UNITS: the most units one job message carries. */
  maxJobUnits: number;
  stats: LeaderStats;
  metrics: Pick<LeaderMetrics, "consumed" | "inFlight" | "confirmWaits" | "unitsPerJob">;
  /** A route span per unit, in the unit's trace; default: not traced. */
  tracing?: Tracing;
}): Promise<Consumer> {
  const { broker, publisher, tracker, heartbeat, logger, stats, metrics } = deps;
  const tracing = deps.tracing ?? noTracing;
  const t = broker.topology;

  /**
   * Traced: a route span per unit (a child of its dispatch span), whose traceparent the unit's
   * job and its routing report carry. Not traced: the units as they came.
   */
  function routeSpans(units: DispatchedUnit[]): { routed: DispatchedUnit[]; spans: HopSpan[] | null } {
    if (!tracing.enabled) return { routed: units, spans: null };
    const spans = units.map((u) =>
      tracing.span("route", u.traceparent, {
        kind: "producer",
        attributes: { ...messagingAttributes({ type: "send", name: "publish", destination: t.jobsExchange, routingKey: u.kind }), ...unitAttributes(u) },
      }),
    );
    return { routed: units.map((u, i) => ({ ...u, traceparent: spans[i]!.traceparent! })), spans };
  }
  const returned = new Set<string>();
  // Message ids are unique per delivery, so two deliveries of the same unit (a duplicate
  // after a fault) never see each other's returns.
  let deliveries = 0;
  // Routing reports of the messages in hand share inbox messages (status-reporter.ts).
  const reporter = createStatusReporter({
    publisher,
    inbox: t.inbox,
    source: () => heartbeat.source,
    extras: () => ({ utilization: tracker.snapshot() }),
    maxMessageBytes: deps.maxMessageBytes,
  });
  publisher.onReturn((msg) => {
    if (typeof msg.properties.messageId === "string") returned.add(msg.properties.messageId);
  });

  /** One outbox delivery: route its units, report them, then ack (or hand it back). */
  async function route(d: Delivery): Promise<void> {
    const parsed = parseDispatch(d.msg.content);
    if (!parsed.ok) {
      stats.deadLettered++;
      heartbeat.deadLettered();
      logger.warn({ reason: parsed.reason, queue: t.box }, "dead-lettering an invalid dispatch message");
      d.deadLetter();
      return;
    }
    if (parsed.unidentified > 0) {
      stats.deadLettered += parsed.unidentified;
      heartbeat.deadLettered(parsed.unidentified);
      logger.warn({ units: parsed.unidentified }, "dropping dispatched units without a valid unitId/attempt");
    }
    const { routed: units, spans } = routeSpans(parsed.units);
    const delivery = ++deliveries;
    const jobs = planJobs(units, delivery);
    try {
      // The broker sends basic.return before the confirm of the same message, so once
      // every confirm is in, `returned` knows exactly which jobs found no queue.
      // A job too large for one message (the publisher refuses it unsent) can never travel:
      // its unit is reported as a permanent error below; any other failure hands it all back.
      const tooLarge = new Map<number, MessageTooLargeError>();
      const noQueue = new Set<number>();
      await Promise.all(jobs.map((job) => publishJob(job, tooLarge, noQueue)));
      metrics.confirmWaits.inc();
      const at = new Date().toISOString();
      // A unit that fails its schema can never be routed: a permanent error, reported.
      const rejected: StatusUpdate[] = parsed.invalid.map((u) => ({
        unitId: u.unitId,
        attempt: u.attempt,
        status: "error",
        at,
        error: { message: `invalid unit in dispatch message: ${u.reason}`, retryable: false },
      }));
      for (const kind of new Set(units.map((u) => u.kind))) tracker.observe(kind);
      const updates: StatusUpdate[] = units.map((u, i) => {
        const big = tooLarge.get(i);
        const trace = traceField(u.traceparent);
        if (big) {
          spans?.[i]!.fail(big);
          return {
            unitId: u.unitId,
            attempt: u.attempt,
            status: "error",
            at,
            error: { message: `refused: its job message (${big.bytes} bytes) is larger than a message may be (${big.limit} bytes: RTB_BROKER_MAX_MESSAGE_BYTES, or the broker's max_message_size when lower); the payload can never travel`, retryable: false },
            ...trace,
          };
        }
        if (!noQueue.has(i)) return { unitId: u.unitId, attempt: u.attempt, status: "queued", at, ...trace };
        spans?.[i]!.set({ "rtb.outcome": "no agent" });
        return {
          unitId: u.unitId,
          attempt: u.attempt,
          status: "error",
          at,
          error: { message: `no agent consumes kind "${u.kind}" (queue ${t.jobQueue(u.kind)} does not exist)`, retryable: true, noAgent: true },
          ...trace,
        };
      });
      const reports = [...updates, ...rejected];
      await reporter.report(reports);
      metrics.confirmWaits.inc();
      const unroutable = updates.filter((u) => u.status === "error").length + rejected.length;
      stats.routed += units.length - unroutable;
      stats.unroutable += unroutable;
      if (unroutable > 0) {
        const which = reports.filter((u) => u.status === "error").map((u) => ({ unitId: u.unitId, attempt: u.attempt }));
        logger.warn({ units: which }, "units of a kind no agent consumes (or invalid): reported as errors");
      }
      d.ack();
    } catch (err) {
      const which = units.map((u) => ({ unitId: u.unitId, attempt: u.attempt }));
      logger.warn({ err: (err as Error).message, units: which }, "routing failed");
      for (const span of spans ?? []) span.fail(err);
      // Handed back after a pause if the broker is at fault; dead-lettered if this message is (consumer.ts).
      await d.retryLater(err);
    } finally {
      for (const job of jobs) returned.delete(job.id);
      for (const span of spans ?? []) span.end();
    }
  }

  /**
   * The jobs of one dispatch message: per kind, in the message's order, units cut into jobs
   * of the size the kind's queue calls for (job-size.ts) and within the byte limit. A job of
   * one unit has the single form, which agents of every version read.
   */
  function planJobs(units: readonly DispatchedUnit[], delivery: number): PlannedJob[] {
    const byKind = new Map<string, number[]>();
    units.forEach((u, i) => {
      const list = byKind.get(u.kind);
      if (list) list.push(i);
      else byKind.set(u.kind, [i]);
    });
    const jobs: PlannedJob[] = [];
    for (const [kind, members] of byKind) {
      const k = unitsPerJob(tracker.depth(kind), deps.maxJobUnits);
      const batches =
        k === 1
          ? members.map((i) => [i])
          : splitBySize(members, { maxCount: k, maxBytes: deps.maxMessageBytes, overhead: batchOverhead(kind), size: (i) => jsonBytes(jobUnit(units[i]!)) });
      for (const batch of batches) {
        const members = batch.map((i) => units[i]!);
        jobs.push({ kind, members: batch, units: members, id: `${delivery}:${jobs.length}`, body: encodeJob(kind, members) });
      }
    }
    return jobs;
  }

  /**
   * Publish one job (mandatory: a kind without a queue comes back) and note what became of
   * its units. A batch the publisher refuses as too large (the broker's own limit turned out
   * lower) goes again one unit per job; a unit refused alone can never travel.
   */
  async function publishJob(job: PlannedJob, tooLarge: Map<number, MessageTooLargeError>, noQueue: Set<number>): Promise<void> {
    try {
      await publisher.publish(t.jobsExchange, job.kind, job.body, { mandatory: true, messageId: job.id, ...traceHeaders(job.units) });
      metrics.unitsPerJob.observe(job.members.length);
      if (returned.has(job.id)) for (const i of job.members) noQueue.add(i);
    } catch (err) {
      if (!(err instanceof MessageTooLargeError)) throw err;
      if (job.members.length === 1) {
        tooLarge.set(job.members[0]!, err);
        return;
      }
      const singles = job.members.map((i, n): PlannedJob => ({ kind: job.kind, members: [i], units: [job.units[n]!], id: `${job.id}:${n}`, body: encodeJob(job.kind, [job.units[n]!]) }));
      try {
        await Promise.all(singles.map((one) => publishJob(one, tooLarge, noQueue)));
      } finally {
        for (const one of singles) returned.delete(one.id);
      }
    }
  }

  return startConsumer({
    broker,
    name: "outbox",
    queue: t.box,
    prefetch: deps.prefetch,
    logger,
    metrics: { consumed: metrics.consumed, queueRole: "outbox" },
    onDeadLetter: () => {
      stats.deadLettered++;
      heartbeat.deadLettered();
    },
    async onDelivery(d) {
      // Outbox deliveries in hand, until acked or handed back.
      metrics.inFlight.inc();
      try {
        await route(d);
      } finally {
        metrics.inFlight.dec();
      }
    },
  });
}
