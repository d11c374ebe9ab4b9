import {
  assertJobQueue,
  createStatusReporter,
  jsonBytes,
  maxResultBytes,
  messagingAttributes,
  MessageTooLargeError,
  noTracing,
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
import { encodeMessage, fieldName, jobUnits, parseJob, SpawnSchema, type JobUnit, type Spawn, type StatusUpdate } from "@rtb/protocol";
import { describeFailure, PermanentJobError, type Handler, type Job } from "./handler.ts";
import { UnitCancelledError, type Cancellations } from "./cancellations.ts";
import type { AgentMetrics } from "./agent-metrics.ts";
import type { AgentStats } from "./agent-stats.ts";

export interface WorkerOptions {
  broker: Broker;
  publisher: Publisher;
  logger: Logger;
  heartbeat: Heartbeat;
  handlers: ReadonlyMap<string, Handler>;
  /** Jobs in hand per kind (the consumer's prefetch). */
  concurrency: number;
  timeoutMs: number;
  /** RTB_BROKER_MAX_MESSAGE_BYTES: a larger success report ends the attempt as a permanent error. */
  maxMessageBytes: number;
  stats: AgentStats;
  /** The cancels heard on the control exchange (cancellations.ts). */
  cancellations: Cancellations;
  metrics: Pick<AgentMetrics, "consumed" | "jobsInFlight" | "handlerDuration" | "jobs" | "confirmWaits">;
  /** Per unit, a receive span and a handler span in its trace; default: not traced. */
  tracing?: Tracing;
}

/**
 * Consumes `jobs.<kind>` for every kind it has a handler for. A job carries one unit or a
 * batch of one kind (the leader batches while the queue is deep); every unit runs as if it had
 * come alone, at most `concurrency` handlers of a kind at once over its jobs in hand. Per unit: report
 * `processing`, run the handler under a timeout, report `success` or `error`. Reports go
 * through one status reporter (status-reporter.ts): what starts or ends in the same turn of the
 * event loop shares one inbox message, and nothing waits for a confirm before it runs. The job
 * is acked once every report of its units is confirmed (one wait per job); if one cannot be
 * confirmed the whole job is handed back, so a unit may run twice after a fault
 * (at-least-once) but its status is never lost.
 *
 * A cancelled attempt (cancellations.ts) reports nothing more: a unit whose cancel was heard
 * before its handler started never runs (dropped), and a running handler sees its signal
 * abort with a UnitCancelledError (it is not waited for, as on a timeout). The api recorded
 * the cancel; it would ignore any report anyway.
 */
export async function startWorker(opts: WorkerOptions): Promise<{ stop(deadlineMs: number): Promise<void> }> {
  const { broker, logger, metrics } = opts;
  const tracing = opts.tracing ?? noTracing;
  const shutdown = new AbortController();
  /** Handler slots per kind: RTB_AGENT_CONCURRENCY handlers of each kind at once, over its jobs in hand. */
  const slotsByKind = new Map<string, ReturnType<typeof createSlots>>();
  /** The handlers running now: the shutdown aborts them. */
  const running = new Set<LazyAbort>();
  shutdown.signal.addEventListener("abort", () => {
    for (const c of running) c.abort(new Error("agent shutting down"));
    for (const slots of slotsByKind.values()) slots.close();
  }, { once: true });
  const reporter = createStatusReporter({
    publisher: opts.publisher,
    inbox: broker.topology.inbox,
    source: () => opts.heartbeat.source,
    maxMessageBytes: opts.maxMessageBytes,
  });
  const consumers: Consumer[] = [];
  for (const [kind, handler] of opts.handlers) {
    const slots = createSlots(opts.concurrency);
    slotsByKind.set(kind, slots);
    consumers.push(
      await startConsumer({
        broker,
        name: `jobs.${kind}`,
        queue: broker.topology.jobQueue(kind),
        prefetch: opts.concurrency,
        logger,
        metrics: { consumed: metrics.consumed, queueRole: "jobs" },
        prepare: async (ch) => void (await assertJobQueue(ch, broker.topology, kind)),
        onDeadLetter: () => {
          opts.stats.deadLettered++;
          opts.heartbeat.deadLettered();
        },
        onDelivery: (d) => runJob(d, handler, kind, slots),
      }),
    );
  }

  /**
   * A result too large for the inbox can never be reported; retrying would only produce it
   * again, so the attempt ends as a permanent error that says so (and the agent goes on).
   * The bound is maxResultBytes, the worst-case envelope's, so it does not depend on the ids.
   */
  function fitted(update: StatusUpdate): StatusUpdate {
    if (update.status !== "success") return update;
    let bytes: number;
    try {
      // A fan-out travels in the same report: its steps count against the same limit.
      bytes = jsonBytes(update.result) + (update.spawn ? jsonBytes(update.spawn) : 0);
    } catch (err) {
      // Not JSON at all (a BigInt, a cycle, nesting too deep): no retry can report it either.
      return permanentError(update, `result cannot be encoded as JSON: ${(err as Error).message}`);
    }
    const max = maxResultBytes(opts.maxMessageBytes, opts.heartbeat.source);
    if (bytes <= max) return update;
    return permanentError(update, `result too large to report: its JSON is ${bytes} bytes, at most ${max} fit in a status message (RTB_BROKER_MAX_MESSAGE_BYTES ${opts.maxMessageBytes})`);
  }

  function permanentError(update: StatusUpdate, message: string): StatusUpdate {
    return { unitId: update.unitId, attempt: update.attempt, status: "error", at: update.at, error: { message, retryable: false }, ...traceField(update.traceparent) };
  }

  /**
   * Report a terminal update; resolves with what was reported. A success the broker refused
   * even alone (its max_message_size is below ours; the reporter resends a refused shared
   * message update by update) can never be reported, so the attempt ends as a permanent
   * error that says so instead of running the job forever.
   */
  function reportTerminal(final: StatusUpdate, log: () => Logger): Promise<StatusUpdate> {
    return reporter.report([final]).then(
      () => final,
      async (err: unknown) => {
        if (!(err instanceof MessageTooLargeError) || final.status !== "success") throw err;
        const refused: StatusUpdate = { ...final, status: "error", result: undefined, error: { message: `result too large to report: ${err.message}`, retryable: false } };
        log().warn({ error: refused.error?.message }, "result refused by the broker: ending the attempt as a permanent error");
        await reporter.report([refused]);
        return refused;
      },
    );
  }

  async function runJob(d: Delivery, handler: Handler, kind: string, slots: Slots) {
    const parsed = parseJob(d.msg.content);
    if (!parsed.ok) {
      opts.stats.deadLettered++;
      opts.heartbeat.deadLettered();
      logger.warn({ reason: parsed.reason }, "dead-lettering an invalid job message");
      d.deadLetter();
      return;
    }
    const units = jobUnits(parsed.value);
    opts.stats.inFlight += units.length;
    metrics.jobsInFlight.inc({ kind }, units.length);
    try {
      const runs = await Promise.all(units.map((unit) => runUnit(unit, handler, kind, slots)));
      const left = units.filter((_, i) => runs[i]!.outcome === "handed back");
      // Every report of the job confirmed together: one wait, then one ack.
      const reported = await Promise.allSettled(runs.flatMap((r) => r.reports));
      metrics.confirmWaits.inc();
      const failed = reported.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed) {
        logger.warn({ err: errorText(failed.reason), units: units.length }, "status report failed");
        // Handed back after a pause if the broker is at fault; dead-lettered if this job is (consumer.ts).
        await d.retryLater(failed.reason);
        return;
      }
      runs.forEach((r) => r.counted?.());
      if (left.length === 0) return d.ack();
      if (left.length === units.length) return d.requeue();
      // Cut short by our shutdown after some units were reported: hand back only the others,
      // as a job of their own, so the reported ones do not run again elsewhere.
      await handBack(d, kind, left);
    } finally {
      opts.stats.inFlight -= units.length;
      metrics.jobsInFlight.dec({ kind }, units.length);
    }
  }

  async function handBack(d: Delivery, kind: string, left: readonly JobUnit[]) {
    // Each unit as it came (its deps, its traceparent): the agent that takes it continues its trace.
    const body = left.length === 1 ? encodeMessage({ v: 1, type: "job", kind, ...left[0]! }) : encodeMessage({ v: 1, type: "job", kind, units: [...left] });
    try {
      await opts.publisher.publish(broker.topology.jobsExchange, kind, body, traceHeaders(left));
      d.ack();
    } catch (err) {
      logger.warn({ err: errorText(err), units: left.length }, "could not hand back the rest of a job: handing back all of it");
      d.requeue();
    }
  }

  type UnitRun = {
    outcome: "reported" | "dropped" | "cancelled" | "handed back";
    /** Its reports, each confirmed or failed; the job is acked when all are confirmed. */
    reports: Promise<unknown>[];
    /** Counts the unit's outcome once its job's reports are confirmed. */
    counted?: () => void;
  };

  /** One unit of a job, in its receive span (a child of the leader's route span); the span ends with the unit's run. */
  async function runUnit(unit: JobUnit, handler: Handler, kind: string, slots: Slots): Promise<UnitRun> {
    const attributes = tracing.enabled ? { ...messagingAttributes({ type: "receive", name: "consume", destination: broker.topology.jobQueue(kind) }), ...unitAttributes({ ...unit, kind }) } : undefined;
    const receive = tracing.span("receive", unit.traceparent, { kind: "consumer", attributes });
    try {
      const run = await runReceived(unit, handler, kind, slots, receive);
      if (tracing.enabled) receive.set({ "rtb.outcome": run.outcome });
      return run;
    } catch (err) {
      receive.fail(err);
      throw err;
    } finally {
      receive.end();
    }
  }

  async function runReceived(unit: JobUnit, handler: Handler, kind: string, slots: Slots, receive: HopSpan): Promise<UnitRun> {
    // Made on first use: a pino child per unit (its bindings, redaction) cost more than a no-op handler.
    let child: Logger | undefined;
    const log = () => (child ??= logger.child({ unitId: unit.unitId, attempt: unit.attempt, kind }));
    if (opts.cancellations.isCancelled(unit.unitId, unit.attempt)) return drop(kind, log);
    // A handler slot: at most `concurrency` of this kind run at once, over every job in hand.
    if (!(await slots.take())) return { outcome: "handed back", reports: [] };
    try {
      // Heard while it waited for a slot: the handler never starts.
      if (opts.cancellations.isCancelled(unit.unitId, unit.attempt)) return drop(kind, log);
      // One per unit, aborted by a cancel (from now on), its own timer or the shutdown.
      const jobAbort = new LazyAbort();
      const untrack = opts.cancellations.track(unit.unitId, unit.attempt, (reason) => jobAbort.abort(reason));
      try {
        const processing = reporter.report([{ unitId: unit.unitId, attempt: unit.attempt, status: "processing", at: new Date().toISOString(), ...traceField(receive.traceparent) }]);
        // Handled now: it may fail while the handler runs, long before the job's one wait
        // reads it (Promise.allSettled below), and Node would call that an unhandled rejection.
        processing.catch(() => {});
        const span = tracing.span("handle", receive.traceparent, { attributes: tracing.enabled ? unitAttributes({ ...unit, kind }) : undefined });
        const started = performance.now();
        const outcome = await runHandler(handler, { ...unit, kind }, jobAbort, log, span.traceparent);
        const seconds = (performance.now() - started) / 1000;
        if (tracing.enabled) endHandlerSpan(span, outcome, jobAbort.reason instanceof UnitCancelledError);
        if (jobAbort.reason instanceof UnitCancelledError) {
          opts.stats.cancelled++;
          metrics.handlerDuration.observe({ kind, outcome: "cancelled" }, seconds);
          metrics.jobs.inc({ kind, outcome: "cancelled" });
          log().info({ handlerMs: Math.round(seconds * 1000) }, "attempt cancelled: handler aborted, nothing reported");
          // Its processing report may still fail: the attempt is over either way.
          return { outcome: "cancelled", reports: [] };
        }
        if (shutdown.signal.aborted && outcome.status === "error") {
          // Cut short by our own shutdown: not the unit's fault. Hand it back for another agent.
          return { outcome: "handed back", reports: [] };
        }
        const final = fitted({ unitId: unit.unitId, attempt: unit.attempt, at: new Date().toISOString(), ...outcome, ...traceField(span.traceparent) });
        if (final.status !== outcome.status) log().warn({ error: final.error?.message }, "result cannot be reported: ending the attempt as a permanent error");
        const terminal = reportTerminal(final, log);
        let sent: StatusUpdate = final;
        terminal.then((s) => (sent = s), () => {});
        return {
          outcome: "reported",
          reports: [processing, terminal],
          counted: () => {
            if (sent.status === "success") opts.stats.succeeded++;
            else opts.stats.failed++;
            // Counted once reported: a job handed back is counted by the agent that finishes it.
            metrics.handlerDuration.observe({ kind, outcome: sent.status }, seconds);
            metrics.jobs.inc({ kind, outcome: sent.status });
            if (logger.isLevelEnabled("debug")) log().debug({ status: sent.status }, "job done");
          },
        };
      } finally {
        untrack();
      }
    } finally {
      // The slot is free once the handler ended, not once its reports are confirmed.
      slots.give();
    }
  }

  /** The handler's span: its outcome, and the error it failed with (retryable or not). */
  function endHandlerSpan(span: HopSpan, outcome: Awaited<ReturnType<typeof runHandler>>, cancelled: boolean) {
    span.set({ "rtb.outcome": cancelled ? "cancelled" : outcome.status });
    if (outcome.status === "error" && !cancelled) {
      span.set({ "rtb.error.retryable": outcome.error.retryable });
      span.fail(new HandlerFailure(outcome.error.message));
    }
    span.end();
  }

  /** A unit of a cancelled attempt that never reached its handler: nothing reported. */
  function drop(kind: string, log: () => Logger): UnitRun {
    opts.stats.dropped++;
    metrics.jobs.inc({ kind, outcome: "dropped" });
    log().info("attempt cancelled: job dropped before its handler ran");
    return { outcome: "dropped", reports: [] };
  }

  async function runHandler(
    handler: Handler,
    job: JobUnit & { kind: string },
    jobAbort: LazyAbort,
    log: () => Logger,
    traceparent: string | undefined,
  ): Promise<{ status: "success"; result: unknown; spawn?: Spawn } | { status: "error"; error: { message: string; retryable: boolean } }> {
    // The job's controller is aborted by its own timer or by the shutdown here (and by a
    // cancel, runJob), both unhooked when the job ends. Not AbortSignal.any([AbortSignal.timeout(), shutdown.signal]): Node
    // keeps every signal combined with a long-lived one (nodejs/node#55351), which grew an
    // agent's memory with every job (175 MiB at 100k units, 296 MiB at 1M in npm run bench).
    const timer = setTimeout(
      () => jobAbort.abort(new Error(`handler exceeded ${opts.timeoutMs} ms (RTB_AGENT_TIMEOUT_MS)`)),
      opts.timeoutMs,
    );
    // Aborted by the shutdown through `running` (one listener per handler on the shutdown
    // signal would pass Node's 10-listener warning at any concurrency above 10).
    if (shutdown.signal.aborted) jobAbort.abort(new Error("agent shutting down"));
    running.add(jobAbort);
    const aborted = jobAbort.whenAborted();
    try {
      // `signal` and `logger` are made when the handler first reads them.
      let spawned: unknown;
      const view: Job = {
        unitId: job.unitId,
        attempt: job.attempt,
        kind: job.kind,
        payload: job.payload,
        deps: job.deps ?? {},
        traceparent,
        spawn(fanOut) {
          if (spawned !== undefined) throw new PermanentJobError("spawn was called twice for one attempt");
          spawned = fanOut;
        },
        get signal() {
          return jobAbort.signal;
        },
        get logger() {
          return log();
        },
      };
      const result = await Promise.race([handler(view), aborted]);
      if (spawned === undefined) return { status: "success", result: result ?? null };
      const spawn = SpawnSchema.safeParse(spawned);
      if (!spawn.success) {
        const issue = spawn.error.issues[0];
        return { status: "error", error: { message: `${fieldName(["spawn", ...(issue?.path ?? [])] as (string | number)[])}: ${issue?.message ?? "invalid"}`, retryable: false } };
      }
      return { status: "success", result: result ?? null, spawn: spawn.data };
    } catch (err) {
      return { status: "error", error: describeFailure(err) };
    } finally {
      clearTimeout(timer);
      running.delete(jobAbort);
      jobAbort.settled();
    }
  }

  return {
    async stop(deadlineMs) {
      // Stop intake and let jobs in hand finish until the deadline; then abort the handlers
      // (their jobs are handed back) and close the channels.
      // The last fifth of the time is for reporting and handing back what was cut short.
      const abortTimer = setTimeout(() => shutdown.abort(), Math.floor(deadlineMs * 0.8));
      await Promise.all(consumers.map((c) => c.stop(deadlineMs)));
      clearTimeout(abortTimer);
    },
  };
}

const errorText = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** What a handler's span records when the handler failed (its error as the agent reports it). */
class HandlerFailure extends Error {
  override name = "HandlerFailure";
}

/**
 * Handler slots: `take` waits (first come, first served) until one is free, or resolves false
 * once `close` was called (the agent is shutting down: the unit is handed back).
 */
type Slots = ReturnType<typeof createSlots>;

function createSlots(n: number) {
  let free = n;
  let closed = false;
  const waiting: ((ok: boolean) => void)[] = [];
  return {
    take(): Promise<boolean> {
      if (closed) return Promise.resolve(false);
      if (free > 0) {
        free--;
        return Promise.resolve(true);
      }
      return new Promise<boolean>((resolve) => waiting.push(resolve));
    },
    give() {
      const next = closed ? undefined : waiting.shift();
      if (next) next(true);
      else free++;
    },
    close() {
      closed = true;
      for (const w of waiting.splice(0)) w(false);
    },
  };
}

/**
 * A unit's abort: what an AbortController does for a handler, with the controller made only
 * when the handler reads `signal` (most never do, and a controller with its listeners cost a
 * no-op handler's run several times over). `whenAborted` rejects with the reason, for racing
 * the handler; `settled` lets it go once the handler ended.
 */
class LazyAbort {
  aborted = false;
  reason: unknown;
  #controller: AbortController | undefined;
  #reject: ((reason: unknown) => void) | undefined;

  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (this.aborted) this.#controller.abort(this.reason);
    }
    return this.#controller.signal;
  }

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    this.#controller?.abort(reason);
    this.#reject?.(reason);
  }

  whenAborted(): Promise<never> {
    return new Promise<never>((_, reject) => {
      if (this.aborted) reject(this.reason);
      else this.#reject = reject;
    });
  }

  settled(): void {
    this.#reject = undefined;
  }
}
