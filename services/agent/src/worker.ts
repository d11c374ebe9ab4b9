import { assertJobQueue, jsonBytes, maxResultBytes, MessageTooLargeError, startConsumer, type Broker, type Consumer, type Delivery, type Heartbeat, type Logger, type Publisher } from "@rtb/runtime";
import { encodeMessage, JobMessage, parseMessage, type StatusUpdate } from "@rtb/protocol";
import { describeFailure, type Handler } from "./handler.ts";
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
  metrics: Pick<AgentMetrics, "consumed" | "jobsInFlight" | "handlerDuration" | "jobs">;
}

/**
 * Consumes `jobs.<kind>` for every kind it has a handler for. Per job: report `processing`,
 * run the handler under a timeout, report `success` or `error`, then ack. Every report is
 * confirmed before the ack; if a report cannot be confirmed the job is handed back, so a
 * unit may run twice after a fault (at-least-once) but its status is never lost.
 *
 * A cancelled attempt (cancellations.ts) reports nothing more and its job is acked: a job
 * whose cancel was heard before it arrived never reaches its handler, and a running handler
 * sees its signal abort with a UnitCancelledError (it is not waited for: the job is acked at
 * once, as on a timeout). The api recorded the cancel; it would ignore any report anyway.
 */
export async function startWorker(opts: WorkerOptions): Promise<{ stop(deadlineMs: number): Promise<void> }> {
  const { broker, logger, metrics } = opts;
  const shutdown = new AbortController();
  const consumers: Consumer[] = [];
  for (const [kind, handler] of opts.handlers) {
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
        onDelivery: (d) => runJob(d, handler, kind),
      }),
    );
  }

  // One inbox message per report, published at once. Coalescing the reports of the jobs in
  // hand (status-reporter.ts, as the leader does) cut the messages per unit from 3 to 1.2,
  // but halved the agents' throughput in `npm run bench` (2,270 -> 1,050 units/s): each job
  // waits for its reports' confirms, and the broker confirmed the fewer, larger messages
  // later. The api's inbox applies up to RTB_INBOX_PREFETCH messages per transaction anyway.
  async function report(update: StatusUpdate) {
    await opts.publisher.publish("", broker.topology.inbox, encodeMessage({ v: 1, type: "status", source: opts.heartbeat.source, updates: [update] }));
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
      bytes = jsonBytes(update.result);
    } catch (err) {
      // Not JSON at all (a BigInt, a cycle, nesting too deep): no retry can report it either.
      return permanentError(update, `result cannot be encoded as JSON: ${(err as Error).message}`);
    }
    const max = maxResultBytes(opts.maxMessageBytes, opts.heartbeat.source);
    if (bytes <= max) return update;
    return permanentError(update, `result too large to report: its JSON is ${bytes} bytes, at most ${max} fit in a status message (RTB_BROKER_MAX_MESSAGE_BYTES ${opts.maxMessageBytes})`);
  }

  function permanentError(update: StatusUpdate, message: string): StatusUpdate {
    return { unitId: update.unitId, attempt: update.attempt, status: "error", at: update.at, error: { message, retryable: false } };
  }

  async function runJob(d: Delivery, handler: Handler, kind: string) {
    const parsed = parseMessage(JobMessage, d.msg.content);
    if (!parsed.ok) {
      opts.stats.deadLettered++;
      opts.heartbeat.deadLettered();
      logger.warn({ reason: parsed.reason }, "dead-lettering an invalid job message");
      d.deadLetter();
      return;
    }
    const job = parsed.value;
    const log = logger.child({ unitId: job.unitId, attempt: job.attempt, kind: job.kind });
    if (opts.cancellations.isCancelled(job.unitId, job.attempt)) return drop(d, kind, log);
    // One controller per job, aborted by a cancel (from now on), its own timer or the shutdown.
    const jobAbort = new AbortController();
    const untrack = opts.cancellations.track(job.unitId, job.attempt, (reason) => jobAbort.abort(reason));
    const cancelled = () => jobAbort.signal.reason instanceof UnitCancelledError;
    opts.stats.inFlight++;
    metrics.jobsInFlight.inc({ kind });
    try {
      await report({ unitId: job.unitId, attempt: job.attempt, status: "processing", at: new Date().toISOString() });
      // Heard while the report was on its way: the handler has not started.
      if (cancelled()) return drop(d, kind, log);
      const started = performance.now();
      const outcome = await runHandler(handler, job, jobAbort, log);
      const seconds = (performance.now() - started) / 1000;
      if (cancelled()) {
        opts.stats.cancelled++;
        metrics.handlerDuration.observe({ kind, outcome: "cancelled" }, seconds);
        metrics.jobs.inc({ kind, outcome: "cancelled" });
        log.info({ handlerMs: Math.round(seconds * 1000) }, "attempt cancelled: handler aborted, nothing reported");
        d.ack();
        return;
      }
      if (shutdown.signal.aborted && outcome.status === "error") {
        // Cut short by our own shutdown: not the unit's fault. Hand it back for another agent.
        d.requeue();
        return;
      }
      const final = fitted({ unitId: job.unitId, attempt: job.attempt, at: new Date().toISOString(), ...outcome });
      if (final.status !== outcome.status) log.warn({ error: final.error?.message }, "result cannot be reported: ending the attempt as a permanent error");
      const sent = await report(final).then(
        () => final,
        async (err: unknown) => {
          // The broker refused the report itself (its max_message_size is below ours): the
          // result can never be reported, so say so instead of running the job forever.
          if (!(err instanceof MessageTooLargeError) || final.status !== "success") throw err;
          const refused: StatusUpdate = { ...final, status: "error", result: undefined, error: { message: `result too large to report: ${err.message}`, retryable: false } };
          log.warn({ error: refused.error?.message }, "result refused by the broker: ending the attempt as a permanent error");
          await report(refused);
          return refused;
        },
      );
      if (sent.status === "success") opts.stats.succeeded++;
      else opts.stats.failed++;
      // Counted once reported: a job handed back is counted by the agent that finishes it.
      metrics.handlerDuration.observe({ kind, outcome: sent.status }, seconds);
      metrics.jobs.inc({ kind, outcome: sent.status });
      log.debug({ status: sent.status }, "job done");
      d.ack();
    } catch (err) {
      log.warn({ err: (err as Error).message }, "status report failed");
      // Handed back after a pause if the broker is at fault; dead-lettered if this job is (consumer.ts).
      await d.retryLater(err);
    } finally {
      untrack();
      opts.stats.inFlight--;
      metrics.jobsInFlight.dec({ kind });
    }
  }

  /** A job of a cancelled attempt that never reached its handler: acked, nothing reported. */
  function drop(d: Delivery, kind: string, log: Logger) {
    opts.stats.dropped++;
    metrics.jobs.inc({ kind, outcome: "dropped" });
    log.info("attempt cancelled: job dropped before its handler ran");
    d.ack();
  }

  async function runHandler(
    handler: Handler,
    job: JobMessage,
    jobAbort: AbortController,
    log: Logger,
  ): Promise<{ status: "success"; result: unknown } | { status: "error"; error: { message: string; retryable: boolean } }> {
    // The job's controller is aborted by its own timer or by the shutdown here (and by a
    // cancel, runJob), both unhooked when the job ends. Not AbortSignal.any([AbortSignal.timeout(), shutdown.signal]): Node
    // keeps every signal combined with a long-lived one (nodejs/node#55351), which grew an
    // agent's memory with every job (175 MiB at 100k units, 296 MiB at 1M in npm run bench).
    const timer = setTimeout(
      () => jobAbort.abort(new Error(`handler exceeded ${opts.timeoutMs} ms (RTB_AGENT_TIMEOUT_MS)`)),
      opts.timeoutMs,
    );
    const onShutdown = () => jobAbort.abort(new Error("agent shutting down"));
    if (shutdown.signal.aborted) onShutdown();
    else shutdown.signal.addEventListener("abort", onShutdown, { once: true });
    let onAbort: () => void = () => {};
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(jobAbort.signal.reason);
      if (jobAbort.signal.aborted) onAbort();
      else jobAbort.signal.addEventListener("abort", onAbort, { once: true });
    });
    try {
      const result = await Promise.race([handler({ ...job, signal: jobAbort.signal, logger: log }), aborted]);
      return { status: "success", result: result ?? null };
    } catch (err) {
      return { status: "error", error: describeFailure(err) };
    } finally {
      clearTimeout(timer);
      shutdown.signal.removeEventListener("abort", onShutdown);
      jobAbort.signal.removeEventListener("abort", onAbort);
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
