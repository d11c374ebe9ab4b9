import { applyStatusUpdates, isDataError, isOutageError, isUnavailableError, ping, type Db, type ReportedUpdate, type ServiceInstanceReport } from "@rtb/db";
import { ackAll, messagingAttributes, noTracing, sleep, startConsumer, unitAttributes, type Broker, type Consumer, type Delivery, type HopSpan, type Logger, type Tracing } from "@rtb/runtime";
import { parseMessage, StatusMessage, type Utilization } from "@rtb/protocol";
import { countInto, type ApiStats } from "./stats.ts";
import type { ApiMetrics } from "./api-metrics.ts";

export interface InboxOptions {
  db: Db;
  broker: Broker;
  stats: ApiStats;
  metrics: Pick<ApiMetrics, "consumed" | "inboxBatch" | "unitDuration">;
  logger: Logger;
  prefetch: number;
  /** How long a batch gathers after its first delivery when no batch is being applied (0: at once). */
  batchMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** RTB_MAX_ATTEMPTS: for spawned steps that do not say. */
  maxAttempts?: number;
  /** Called after each committed batch that freed room in the outbox or scheduled a retry. */
  onFreed: () => void;
  /**
   * Called after a committed batch with the cancelled attempts it saw reported queued or
   * processing: an agent is about to run one, or runs it, without having heard the cancel.
   */
  onCancelledRunning?: (units: { unitId: number; attempt: number }[]) => void;
  /** An apply span per status update that carries a traceparent; default: not traced. */
  tracing?: Tracing;
}

interface Pending {
  d: Delivery;
  message: StatusMessage;
  done: () => void;
}

/** Flatten a batch into reports (source stamped), the newest leader utilization and the senders. */
function collect(batch: Pending[]) {
  const updates: ReportedUpdate[] = [];
  const instances: ServiceInstanceReport[] = [];
  const agentKinds = new Set<string>();
  let leader: { id: string; utilization: Utilization; at: Date; firstAt: Date } | undefined;
  const firstReport = new Map<string, Date>();
  for (const { message } of batch) {
    const source = `${message.source.service}:${message.source.id}`;
    // Heartbeats (no updates) say who is alive; reports need no upsert of their own.
    if (message.updates.length === 0 && message.source.startedAt) {
      instances.push({
        service: message.source.service,
        id: message.source.id,
        startedAt: new Date(message.source.startedAt),
        deadLettered: message.counters?.deadLettered ?? 0,
      });
      if (message.source.service === "agent") for (const kind of message.kinds ?? []) agentKinds.add(kind);
    }
    for (const u of message.updates) {
      // Only the leader knows whether a kind has a job queue: from anyone else, "no agent" is an ordinary error.
      const error = u.error?.noAgent && message.source.service !== "leader" ? { message: u.error.message, retryable: u.error.retryable } : u.error;
      updates.push({ unitId: u.unitId, attempt: u.attempt, status: u.status, at: new Date(u.at), source, result: u.result, error, ...(u.spawn ? { spawn: u.spawn } : {}) });
    }
    if (message.source.service === "leader" && message.utilization) {
      // When the leader reported: its updates' time, not the tracker's (a standby that just
      // took over still carries the snapshot it made at start).
      const at = new Date(message.updates.length ? Math.max(...message.updates.map((u) => Date.parse(u.at))) : message.utilization.at);
      const first = firstReport.get(message.source.id);
      if (!first || at < first) firstReport.set(message.source.id, at);
      if (!leader || at >= leader.at) leader = { id: message.source.id, utilization: message.utilization, at, firstAt: at };
    }
  }
  // A leader that takes over has been active since its earliest report in the batch.
  if (leader) leader.firstAt = firstReport.get(leader.id) ?? leader.at;
  return { updates, leader, instances, agentKinds: [...agentKinds] };
}

/**
 * Consumes status reports in batches: every delivery of a batch is applied in one database
 * transaction, and acked only after that transaction committed. If the database is down the
 * batch is retried with backoff while its deliveries stay unacked (the broker still holds
 * them), so a crash at any point loses nothing: unacked deliveries are redelivered, and
 * re-applying a report changes nothing (status-transitions.ts).
 */
export interface InboxConsumer extends Consumer {
  /**
   * How long every report that reached this api has been applied without delay: 0 while
   * applying fails (the database is down), then the time since it recovered (or started).
   * The reconciler only judges a unit stale over a window in which its reports, had there
   * been any, would have been applied.
   */
  healthyForMs(): number;
  /** How long applying has been failing on a database outage (0 while it is not). */
  failingForMs(): number;
}

export async function startInboxConsumer(opts: InboxOptions): Promise<InboxConsumer> {
  const { db, stats, logger } = opts;
  const tracing = opts.tracing ?? noTracing;
  const processed = messagingAttributes({ type: "process", name: "apply", destination: opts.broker.topology.inbox });

  /** Per message, the apply spans of its updates that are in a trace (the sender's span is their parent). */
  function applySpans(batch: Pending[]): Map<Pending, HopSpan[]> {
    const spans = new Map<Pending, HopSpan[]>();
    for (const p of batch) {
      const list: HopSpan[] = [];
      for (const u of p.message.updates) {
        if (u.traceparent === undefined) continue;
        const attributes = { ...processed, ...unitAttributes(u), "rtb.unit.status": u.status, "rtb.source": p.message.source.service };
        list.push(tracing.span("apply", u.traceparent, { kind: "consumer", attributes }));
      }
      if (list.length > 0) spans.set(p, list);
    }
    return spans;
  }
  let buffer: Pending[] = [];
  let timer: NodeJS.Timeout | undefined;
  let chain: Promise<void> = Promise.resolve();
  const stopping = new AbortController();
  let healthySince = Date.now();
  let failing = false;
  let failingSince: number | null = null;

  /** A batch is being applied, or its start is scheduled: what arrives meanwhile waits for the next one. */
  let busy = false;

  /**
   * Group commit: a delivery arriving while no batch is applied starts one at once (after
   * RTB_INBOX_BATCH_MS, 0 by default, and the rest of the socket read it came in); what arrives
   * while a batch is applied forms the next batch, started as soon as that one committed. At
   * light load a report waits for nothing; under load batches grow by themselves, up to the
   * prefetch.
   */
  function scheduleFlush() {
    if (busy) {
      // A full batch does not wait out RTB_INBOX_BATCH_MS.
      if (timer && buffer.length >= opts.prefetch) {
        clearTimeout(timer);
        startFlush();
      }
      return;
    }
    busy = true;
    if (opts.batchMs > 0) timer = setTimeout(startFlush, opts.batchMs);
    else setImmediate(startFlush);
  }

  function startFlush() {
    timer = undefined;
    chain = chain.then(flush).finally(() => {
      busy = false;
      if (buffer.length > 0) scheduleFlush();
    });
  }

  async function flush() {
    const batch = buffer;
    buffer = [];
    if (batch.length === 0) return;
    const spans = tracing.enabled ? applySpans(batch) : null;
    if ((await applyRetrying(batch)).outcome === "refused") {
      // Something in the batch can never be applied (PostgreSQL refused its values, or the
      // api failed on it in any way that is not a database outage): apply the messages one
      // by one and dead-letter only those that fail, so the rest are not held up.
      for (const p of batch) {
        const one = await applyRetrying([p]);
        if (one.outcome !== "refused") continue;
        const reason = isDataError(one.err) ? "unstorable_status_message" : "unapplicable_status_message";
        countInto(stats.deadLettered, reason);
        const units = p.message.updates.slice(0, 10).map((u) => ({ unitId: u.unitId, attempt: u.attempt }));
        logger.warn(
          { reason, err: errorText(one.err), messageId: p.d.msg.properties.messageId, source: p.message.source, units, updates: p.message.updates.length },
          "dead-lettering a status message the api cannot apply",
        );
        p.d.deadLetter();
        for (const span of spans?.get(p) ?? []) span.fail(one.err);
      }
    }
    for (const list of spans?.values() ?? []) for (const span of list) span.end();
    // Stopped before a batch committed: it stays unacked; closing the channel returns it.
    for (const p of batch) p.done();
  }

  /**
   * Apply in one transaction and ack. Only a database outage (isOutageError) is retried, with
   * backoff, holding the batch unacked: any other failure is the batch's own and would fail
   * the same way forever, so it is returned for the caller to isolate.
   */
  async function applyRetrying(batch: Pending[]): Promise<{ outcome: "applied" | "stopped" } | { outcome: "refused"; err: unknown }> {
    for (let attempt = 1; !stopping.signal.aborted; attempt++) {
      let result: Awaited<ReturnType<typeof applyStatusUpdates>>;
      try {
        const { updates, leader, instances, agentKinds } = collect(batch);
        result = await applyStatusUpdates(db, updates, { retryBaseMs: opts.retryBaseMs, retryMaxMs: opts.retryMaxMs, maxAttempts: opts.maxAttempts, leader, instances, agentKinds });
      } catch (err) {
        // Cut short by stop() (the database may be closing under us): the batch stays unacked.
        if (stopping.signal.aborted) break;
        // Not an outage, or the connection died under this batch again while the server still
        // answers (a backend that crashes on it): the batch's fault. The database answered, so
        // the inbox is not held, and the caller isolates the culprits.
        if (!isOutageError(err) || (isUnavailableError(err) && attempt >= 3 && (await ping(db)))) {
          markHealthy();
          return { outcome: "refused", err };
        }
        markFailing();
        const delay = Math.min(5_000, 100 * 2 ** attempt);
        logger.warn({ err, messages: batch.length, retryInMs: delay }, "database unavailable; retrying the status reports (they stay unacked)");
        await sleep(delay, stopping.signal);
        continue;
      }
      stats.applied += result.applied;
      opts.metrics.inboxBatch.observe(batch.length);
      for (const f of result.finished) opts.metrics.unitDuration.observe({ kind: f.kind, status: f.status }, f.seconds);
      for (const [reason, n] of Object.entries(result.ignored)) countInto(stats.ignored, reason, n);
      if (Object.keys(result.ignored).length > 0) logger.debug({ ignored: result.ignored }, "ignored status reports");
      if (result.refusedHeartbeats.length > 0) {
        countInto(stats.ignored, "implausible_heartbeat", result.refusedHeartbeats.length);
        logger.warn({ heartbeats: result.refusedHeartbeats.slice(0, 10) }, "heartbeats claiming implausible values; those values were not recorded");
      }
      // One multiple-ack per channel instead of one ack per message (consumer.ts).
      ackAll(batch.map((p) => p.d));
      markHealthy();
      // A scheduled retry needs a top-up too: it arms the timer for the end of its backoff.
      if (result.released > 0) logger.info({ units: result.released }, "an agent announced kinds that units were waiting for: back in the backlog");
      // Units released for an agent are ready now: a top-up takes them.
      // ... and so are dependents that the batch's finished units made ready (workflows).
      if (result.freed > 0 || result.retries > 0 || result.released > 0 || result.settledDependents > 0) opts.onFreed();
      if (result.cancelledRunning.length > 0) opts.onCancelledRunning?.(result.cancelledRunning);
      return { outcome: "applied" };
    }
    return { outcome: "stopped" };
  }

  function markHealthy() {
    if (!failing) return;
    failing = false;
    failingSince = null;
    healthySince = Date.now();
  }

  function markFailing() {
    if (!failing) failingSince = Date.now();
    failing = true;
  }

  const consumer = await startConsumer({
    broker: opts.broker,
    name: "inbox",
    queue: opts.broker.topology.inbox,
    prefetch: opts.prefetch,
    logger,
    metrics: { consumed: opts.metrics.consumed, queueRole: "inbox" },
    onDelivery(d) {
      const parsed = parseMessage(StatusMessage, d.msg.content);
      if (!parsed.ok) {
        countInto(stats.deadLettered, "invalid_status_message");
        logger.warn({ reason: parsed.reason, queue: opts.broker.topology.inbox }, "dead-lettering an invalid status message");
        d.deadLetter();
        return;
      }
      return new Promise<void>((done) => {
        buffer.push({ d, message: parsed.value, done });
        scheduleFlush();
      });
    },
  });

  return {
    healthyForMs: () => (failing ? 0 : Date.now() - healthySince),
    failingForMs: () => (failingSince === null ? 0 : Date.now() - failingSince),
    async stop(deadlineMs) {
      // Flush what is buffered, then stop; an in-progress DB retry is cut short by the abort.
      clearTimeout(timer);
      timer = undefined;
      chain = chain.then(flush);
      const deadline = setTimeout(() => stopping.abort(), deadlineMs);
      await consumer.stop(deadlineMs);
      clearTimeout(deadline);
      stopping.abort();
    },
  };
}

const errorText = (err: unknown) => (err instanceof Error ? `${err.name}: ${err.message}` : String(err));
