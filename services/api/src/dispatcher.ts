import { applyStatusUpdates, claimTopUp, compactTallies, keepTraceparents, nextRetryAt, type ClaimedUnit, type Db } from "@rtb/db";
import { dispatchMessages, messagingAttributes, MessageTooLargeError, noTracing, traceHeaders, unitAttributes, type HopSpan, type Logger, type Publisher, type Topology, type Tracing } from "@rtb/runtime";
import { encodeMessage } from "@rtb/protocol";
import type { ApiStats } from "./stats.ts";
import type { ApiMetrics } from "./api-metrics.ts";

/** How often the top-up folds the tallies' deltas together (db/src/tallies.ts). */
const TALLY_COMPACT_MS = 1_000;

/**
 * Units per outbox message at most (fewer when their bytes fill it); the leader cuts each into
 * jobs (services/leader/src/job-size.ts). Exported for the bench's raw path, which batches alike.
 */
export const UNITS_PER_MESSAGE = 100;

export interface Dispatcher {
  /** Ask for a top-up soon. Calls coalesce: at most one runs, and one more is queued behind it. */
  trigger(reason: string): void;
  /** Run a top-up now and wait for it (used by GET /go and tests). */
  topUp(): Promise<number>;
  /** Publish units that are already `dispatched` in the database (the reconciler's re-publish). */
  publish(units: ClaimedUnit[]): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Keeps the outbox topped up to RTB_BROADCAST_MAX_QUEUE. The claim commits first
 * (db/top-up.ts); only then are the units published, with confirms. A unit whose publish
 * fails stays `dispatched` and the reconciler publishes it again after RTB_DISPATCH_TIMEOUT_MS.
 */
export function createDispatcher(deps: {
  db: Db;
  publisher: Publisher;
  topology: Topology;
  maxQueue: number;
  /** RTB_BROKER_MAX_MESSAGE_BYTES */
  maxMessageBytes: number;
  stats: ApiStats;
  metrics: Pick<ApiMetrics, "topUpDuration" | "confirmWaits">;
  logger: Logger;
  /** Whether this api folds the tallies (the `tallies` duty: one api at a time does); default always. */
  folds?: () => boolean;
  /** A dispatch span per unit published, in the unit's trace; default: not traced. */
  tracing?: Tracing;
}): Dispatcher {
  const { db, publisher, topology, maxQueue, maxMessageBytes, stats, metrics, logger } = deps;
  const tracing = deps.tracing ?? noTracing;
  const sent = messagingAttributes({ type: "send", name: "publish", destination: topology.box });
  const folds = deps.folds ?? (() => true);
  let running: Promise<number> | null = null;
  let queued = false;
  let stopped = false;
  let wakeTimer: NodeJS.Timeout | undefined;
  let lastCompacted = 0;

  async function publish(claimed: ClaimedUnit[], perMessage = UNITS_PER_MESSAGE): Promise<void> {
    // Traced: each unit travels with its dispatch span's traceparent (a child of the one it
    // was stored with); not traced, with the stored one as it is.
    const spans = tracing.enabled ? new Map<ClaimedUnit, HopSpan>() : null;
    // Units stored without a trace (enqueued while tracing was off, seeded): their first traced
    // dispatch starts one, and it is stored, so their later attempts join it.
    const started: { unitId: number; traceparent: string }[] = [];
    const units = spans
      ? claimed.map((u) => {
          const span = tracing.span("dispatch", u.traceparent, { kind: "producer", attributes: { ...sent, ...unitAttributes(u) } });
          const unit = { ...u, traceparent: span.traceparent! };
          if (u.traceparent === undefined) started.push({ unitId: u.unitId, traceparent: span.traceparent! });
          spans.set(unit, span);
          return unit;
        })
      : claimed;
    if (started.length > 0) await keepTraces(started);
    const messages = dispatchMessages(units, perMessage, maxMessageBytes);
    const results = await Promise.allSettled(messages.map((m) => publisher.publish("", topology.box, encodeMessage(m), traceHeaders(m.units))));
    metrics.confirmWaits.inc();
    if (spans) {
      messages.forEach((m, i) => {
        const r = results[i]!;
        for (const u of m.units) {
          const span = spans.get(u)!;
          if (r.status === "rejected") span.fail(r.reason);
          span.end();
        }
      });
    }
    // A unit too large for a message of its own can never travel (POST /units refuses such
    // payloads, but RTB_BROKER_MAX_MESSAGE_BYTES may have been lowered since, or the broker's
    // max_message_size be lower): it ends as a permanent error, or the reconciler would
    // publish it again forever. A refused message of several units is published again one
    // unit per message, to find the culprits.
    const refused: { unit: ClaimedUnit; err: MessageTooLargeError }[] = [];
    const again: ClaimedUnit[] = [];
    messages.forEach((m, i) => {
      const r = results[i]!;
      if (r.status !== "rejected" || !(r.reason instanceof MessageTooLargeError)) return;
      if (m.units.length === 1) refused.push({ unit: m.units[0]!, err: r.reason });
      else again.push(...m.units);
    });
    const failed = results.filter((r) => r.status === "rejected" && !(r.reason instanceof MessageTooLargeError));
    if (refused.length > 0) await refuse(refused);
    if (failed.length > 0) {
      stats.publishFailures += failed.length;
      logger.warn(
        { err: (failed[0] as PromiseRejectedResult).reason?.message, messages: failed.length },
        "outbox publish not confirmed; the reconciler will publish those units again",
      );
    }
    if (again.length > 0) await publish(again, 1);
  }

  async function keepTraces(started: { unitId: number; traceparent: string }[]) {
    // Only the trace of their later attempts is at stake: they would start traces of their own.
    await keepTraceparents(db, started).catch((err: unknown) => logger.warn({ err: err instanceof Error ? err.message : String(err), units: started.length }, "could not store the traces dispatch started"));
  }

  async function refuse(refused: { unit: ClaimedUnit; err: MessageTooLargeError }[]) {
    const at = new Date();
    const updates = refused.map(({ unit, err }) => ({
      unitId: unit.unitId,
      attempt: unit.attempt,
      status: "error" as const,
      at,
      source: "api",
      error: { message: `refused: its dispatch message (${err.bytes} bytes) is larger than a message may be (${err.limit} bytes: RTB_BROKER_MAX_MESSAGE_BYTES, or the broker's max_message_size when lower); the payload can never travel`, retryable: false },
    }));
    const result = await applyStatusUpdates(db, updates, { retryBaseMs: 0, retryMaxMs: 0 });
    stats.refused += result.applied;
    logger.warn({ units: refused.map(({ unit }) => ({ unitId: unit.unitId, attempt: unit.attempt })) }, "units too large for one message: ended as permanent errors");
  }

  async function runOnce(): Promise<number> {
    // The top-up's latency: claim, then publish and await the confirms (a failed one is not observed).
    const endTimer = metrics.topUpDuration.startTimer();
    const claim = await claimTopUp(db, maxQueue);
    if (claim.units.length > 0) {
      stats.dispatched += claim.units.length;
      logger.debug({ units: claim.units.length, outstanding: claim.outstanding }, "topped up the outbox");
      await publish(claim.units);
    }
    endTimer();
    // Room left but nothing eligible: wake when the earliest retry backoff ends.
    if (claim.dispatching && claim.outstanding + claim.units.length < maxQueue) await scheduleWake();
    // Fold the tallies' deltas at most once a second, so that reading them stays cheap; by the
    // api holding the duty (every api tops up at least on each reconciler tick).
    if (folds() && Date.now() - lastCompacted >= TALLY_COMPACT_MS) {
      lastCompacted = Date.now();
      await compactTallies(db);
    }
    return claim.units.length;
  }

  async function scheduleWake() {
    const at = await nextRetryAt(db);
    clearTimeout(wakeTimer);
    // Capped: setTimeout overflows past ~24.8 days, and waking early only re-runs a top-up.
    const delay = Math.min(60_000, Math.max(0, at ? at.getTime() - Date.now() : 0) + 5);
    if (at && !stopped) wakeTimer = setTimeout(() => trigger("retry backoff ended"), delay);
  }

  function run(): Promise<number> {
    if (running) {
      queued = true;
      return running;
    }
    running = (async () => {
      let total = 0;
      do {
        queued = false;
        try {
          total += await runOnce();
        } catch (err) {
          logger.warn({ err }, "top-up failed; the next trigger or reconcile tick retries");
        }
      } while (queued && !stopped);
      // Cleared in the same step as the last `queued` check, so no trigger can slip between.
      running = null;
      return total;
    })();
    return running;
  }

  function trigger(reason: string) {
    if (stopped) return;
    logger.trace({ reason }, "top-up requested");
    void run();
  }

  return {
    trigger,
    topUp: () => run(),
    publish,
    async stop() {
      stopped = true;
      clearTimeout(wakeTimer);
      await running;
    },
  };
}
