import { createStatusReporter, MessageTooLargeError, startConsumer, type Broker, type Consumer, type Delivery, type Heartbeat, type Logger, type Publisher } from "@rtb/runtime";
import { encodeMessage, parseDispatch, type StatusUpdate } from "@rtb/protocol";
import type { Tracker } from "./tracker.ts";
import type { LeaderMetrics } from "./leader-metrics.ts";
import type { LeaderStats } from "./leader-stats.ts";

/**
 * The leader's one job: take a dispatch message from the outbox (single active consumer, so
 * one leader is active and the others stand by), publish one job per unit into `rtb.jobs`
 * by kind (mandatory: a kind that no agent has bound comes back), report `queued` (or the
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
  stats: LeaderStats;
  metrics: Pick<LeaderMetrics, "consumed" | "inFlight">;
}): Promise<Consumer> {
  const { broker, publisher, tracker, heartbeat, logger, stats, metrics } = deps;
  const t = broker.topology;
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
    const units = parsed.units;
    const delivery = ++deliveries;
    const ids = units.map((u) => `${delivery}:${u.unitId}:${u.attempt}`);
    try {
      // The broker sends basic.return before the confirm of the same message, so once
      // every confirm is in, `returned` knows exactly which jobs found no queue.
      // A job too large for one message (the publisher refuses it unsent) can never travel:
      // its unit is reported as a permanent error below; any other failure hands it all back.
      const tooLarge = new Map<number, MessageTooLargeError>();
      await Promise.all(
        units.map((u, i) =>
          publisher
            .publish(
              t.jobsExchange,
              u.kind,
              encodeMessage({ v: 1, type: "job", unitId: u.unitId, attempt: u.attempt, kind: u.kind, payload: u.payload }),
              { mandatory: true, messageId: ids[i] },
            )
            .catch((err: unknown) => {
              if (!(err instanceof MessageTooLargeError)) throw err;
              tooLarge.set(i, err);
            }),
        ),
      );
      const at = new Date().toISOString();
      // A unit that fails its schema can never be routed: a permanent error, reported.
      const rejected: StatusUpdate[] = parsed.invalid.map((u) => ({
        unitId: u.unitId,
        attempt: u.attempt,
        status: "error",
        at,
        error: { message: `invalid unit in dispatch message: ${u.reason}`, retryable: false },
      }));
      const updates: StatusUpdate[] = units.map((u, i) => {
        tracker.observe(u.kind);
        const big = tooLarge.get(i);
        if (big) {
          return {
            unitId: u.unitId,
            attempt: u.attempt,
            status: "error",
            at,
            error: { message: `refused: its job message (${big.bytes} bytes) is larger than a message may be (${big.limit} bytes: RTB_BROKER_MAX_MESSAGE_BYTES, or the broker's max_message_size when lower); the payload can never travel`, retryable: false },
          };
        }
        if (!returned.has(ids[i]!)) return { unitId: u.unitId, attempt: u.attempt, status: "queued", at };
        return {
          unitId: u.unitId,
          attempt: u.attempt,
          status: "error",
          at,
          error: { message: `no agent consumes kind "${u.kind}" (queue ${t.jobQueue(u.kind)} does not exist)`, retryable: true, noAgent: true },
        };
      });
      const reports = [...updates, ...rejected];
      await reporter.report(reports);
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
      // Handed back after a pause if the broker is at fault; dead-lettered if this message is (consumer.ts).
      await d.retryLater(err);
    } finally {
      for (const id of ids) returned.delete(id);
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
