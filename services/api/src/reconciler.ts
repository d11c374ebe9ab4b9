import { schedule, type ScheduledTask } from "node-cron";
import { applyStatusUpdates, cancelLongWaits, claimStaleDispatched, expireProcessing, pruneInstances, recordInstances, republishedTooOften, staleQueued, type Db, type ServiceInstanceReport } from "@rtb/db";
import type { Broker, Logger } from "@rtb/runtime";
import type { Dispatcher } from "./dispatcher.ts";
import type { Scheduler } from "./scheduler.ts";
import type { ApiStats } from "./stats.ts";
import type { Duties } from "./duties.ts";

export interface ReconcilerOptions {
  db: Db;
  broker: Broker;
  dispatcher: Dispatcher;
  stats: ApiStats;
  logger: Logger;
  cron: string;
  maxQueue: number;
  dispatchTimeoutMs: number;
  processingTimeoutMs: number;
  /** RTB_NO_AGENT_TIMEOUT_MS: units waiting longer for an agent of their kind are cancelled (0: never). */
  noAgentTimeoutMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** This api instance, recorded as seen on every pass (GET / lists the replicas alive). */
  self: () => ServiceInstanceReport;
  /** How long the inbox has applied every report without delay (InboxConsumer.healthyForMs). */
  inboxHealthyForMs: () => number;
  /** Re-publishes of one attempt without progress before it is ended as an error (default 3). */
  maxRepublishes?: number;
  /** Looked at on every pass: changes made on other replicas reach this one's timer so. */
  scheduler?: Pick<Scheduler, "refresh">;
  /** Steps 1-4 and the pruning of instances are the `reconciler` duty's: run by the api holding it. */
  duties: Pick<Duties, "holds">;
}

/** How often old service instances are pruned (instances.ts, pruneInstances). */
const PRUNE_EVERY_MS = 60_000;

export interface Reconciler {
  /** One pass, as the cron tick runs it (exposed for tests and operators). */
  tick(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * The safety net, on a node-cron schedule:
 * 1. attempts stuck in `processing` past RTB_PROCESSING_TIMEOUT_MS are errored (and retried);
 * 2. units `dispatched` longer than RTB_DISPATCH_TIMEOUT_MS are published again, but only when
 *    the outbox has no ready messages: while messages wait there (no leader running), the
 *    units are not lost, and re-publishing would only flood the broker with duplicates. A
 *    unit re-published `maxRepublishes` times without reaching `queued` is not re-published
 *    again: its attempt is recorded as a retryable error naming the cause;
 * 3. units `queued` longer than RTB_DISPATCH_TIMEOUT_MS while their kind's job queue has no
 *    job waiting: their job was lost (a queue purged or deleted, a broker that lost it), so
 *    the attempt is recorded as a retryable error. While jobs wait (agents busy or absent),
 *    nothing is touched;
 * 4. units that waited for an agent of their kind longer than RTB_NO_AGENT_TIMEOUT_MS are
 *    cancelled (db/src/agent-wait.ts), and kinds with no unit waiting any more are forgotten;
 * 5. a top-up, which also releases retries whose backoff has ended.
 * Each pass first has the scheduler look again (fire what is due, re-arm its timer from the
 * database: a schedule added or changed on another replica is seen within a tick). Each pass also records this api as alive (service_instances), with its dead-letter count,
 * and once a minute prunes the instances not seen for long (instances.ts, pruneInstances).
 * Steps 1-4 and the pruning are done by the api holding the `reconciler` duty (duties.ts); the
 * others only record themselves, have the scheduler look, and top up.
 *
 * Steps 1-3 judge a unit by the reports that did NOT arrive, so each runs only once the inbox
 * has applied reports without delay for the whole timeout: after an api restart or a
 * database outage, the reports that waited in the inbox are applied first (otherwise a unit
 * whose success is still in the inbox would be recorded as lost). And a queued unit is
 * declared lost only when two passes in a row see it so, which closes the few milliseconds
 * between an agent taking its job and its `processing` report being applied.
 */
export function startReconciler(opts: ReconcilerOptions): Reconciler {
  const { db, broker, dispatcher, stats, logger } = opts;
  let current: Promise<void> | null = null;
  const maxRepublishes = opts.maxRepublishes ?? 3;
  let prunedAt = 0;

  async function pass() {
    // Never throws: the scheduler logs and retries its own failures.
    await opts.scheduler?.refresh("reconcile");
    await recordInstances(db, [opts.self()]);
    if (!opts.duties.holds("reconciler")) {
      // Another api reconciles; if this one takes over, its judgement of lost jobs starts afresh.
      suspects.clear();
      dispatcher.trigger("reconcile");
      return;
    }
    if (Date.now() - prunedAt >= PRUNE_EVERY_MS) {
      prunedAt = Date.now();
      const pruned = await pruneInstances(db);
      if (pruned > 0) logger.info({ instances: pruned }, "pruned service instances not seen for long (their dead-letter totals are kept)");
    }
    const waits = await cancelLongWaits(db, opts.noAgentTimeoutMs);
    if (waits.cancelled > 0) logger.warn({ units: waits.cancelled, kinds: waits.kinds }, "units waited longer than RTB_NO_AGENT_TIMEOUT_MS for an agent of their kind: cancelled");
    const applyOpts = { retryBaseMs: opts.retryBaseMs, retryMaxMs: opts.retryMaxMs };
    const healthyFor = opts.inboxHealthyForMs();
    if (healthyFor >= opts.processingTimeoutMs) {
      const expired = await expireProcessing(db, opts.processingTimeoutMs, applyOpts);
      if (expired.applied > 0) {
        logger.warn({ units: expired.applied }, "attempts timed out in processing; recorded as errors");
      }
    }
    if (healthyFor < opts.dispatchTimeoutMs) {
      suspects.clear();
      dispatcher.trigger("reconcile");
      return;
    }

    const outbox = await broker.inspectQueue(broker.topology.box);
    if (outbox?.exists && outbox.messages === 0) {
      await endRefusedDispatches(applyOpts);
      const stale = await claimStaleDispatched(db, opts.dispatchTimeoutMs, opts.maxQueue, maxRepublishes);
      if (stale.length > 0) {
        logger.warn({ units: stale.length }, "re-publishing units whose dispatch was never acknowledged");
        stats.republished += stale.length;
        await dispatcher.publish(stale);
      }
    }
    await expireLostJobs(applyOpts);
    dispatcher.trigger("reconcile");
  }

  /**
   * Units re-published `maxRepublishes` times without reaching `queued`: the broker took their
   * messages, yet nothing came of them (a leader refusing them, a message nobody can route).
   * Re-publishing forever would hide that; the attempt ends as a retryable error naming the
   * cause, so the status rules retry it (or end the unit) and the timeline says why.
   */
  async function endRefusedDispatches(applyOpts: { retryBaseMs: number; retryMaxMs: number }) {
    const refused = await republishedTooOften(db, opts.dispatchTimeoutMs, maxRepublishes, opts.maxQueue);
    if (refused.length === 0) return;
    const message = `dispatch never acknowledged: re-published ${maxRepublishes} times, ${opts.dispatchTimeoutMs} ms apart (RTB_DISPATCH_TIMEOUT_MS), without the unit reaching queued`;
    const now = new Date();
    const result = await applyStatusUpdates(
      db,
      refused.map((u) => ({ unitId: u.unitId, attempt: u.attempt, status: "error" as const, at: now, source: "reconciler", error: { message, retryable: true } })),
      applyOpts,
    );
    if (result.applied > 0) logger.warn({ units: refused.slice(0, 10), count: result.applied }, "units re-published without progress; their attempts recorded as errors");
  }

  // Queued units seen without a job on the previous pass: `unitId:attempt`.
  let suspects = new Set<string>();

  async function expireLostJobs(applyOpts: { retryBaseMs: number; retryMaxMs: number }) {
    const stale = await staleQueued(db, opts.dispatchTimeoutMs, opts.maxQueue);
    const now = new Date();
    const seen = new Set<string>();
    for (const kind of new Set(stale.map((u) => u.kind))) {
      // A deleted job queue holds no job either.
      if ((await broker.inspectQueue(broker.topology.jobQueue(kind)))?.messages !== 0) continue;
      const candidates = stale.filter((u) => u.kind === kind);
      for (const u of candidates) seen.add(`${u.unitId}:${u.attempt}`);
      const lost = candidates.filter((u) => suspects.has(`${u.unitId}:${u.attempt}`));
      if (lost.length === 0) continue;
      const message = `job lost: queued for over ${opts.dispatchTimeoutMs} ms while ${broker.topology.jobQueue(kind)} had no job waiting (RTB_DISPATCH_TIMEOUT_MS)`;
      const result = await applyStatusUpdates(
        db,
        lost.map((u) => ({ unitId: u.unitId, attempt: u.attempt, status: "error" as const, at: now, source: "reconciler", error: { message, retryable: true } })),
        applyOpts,
      );
      if (result.applied > 0) logger.warn({ kind, units: result.applied }, "queued units whose job was lost; recorded as errors to retry");
    }
    suspects = seen;
  }

  function tick(): Promise<void> {
    current ??= pass()
      .catch((err: unknown) => logger.warn({ err }, "reconcile pass failed; next tick retries"))
      .finally(() => {
        current = null;
      });
    return current;
  }

  const task: ScheduledTask = schedule(opts.cron, () => tick(), { name: "reconcile", noOverlap: true });

  return {
    tick,
    async stop() {
      await task.destroy();
      await current;
    },
  };
}
