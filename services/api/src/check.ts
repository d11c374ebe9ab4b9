import { checkTallies, checkTimelines, checkWorkflows, countByStatus, outstandingNow, republishedWithoutProgress, stuckUnits, type Db, type Violation } from "@rtb/db";
import { isTerminal, TERMINAL, UNIT_STATUSES, type UnitStatus } from "@rtb/protocol";
import type { Broker, QueueState } from "@rtb/runtime";

export type { Violation };

export interface CheckOptions {
  db: Db;
  broker: Broker;
  maxQueue: number;
  dispatchTimeoutMs: number;
  processingTimeoutMs: number;
  /** Slack on top of each timeout for the reconciler's next pass (default 10 s). */
  graceMs?: number;
  /** Sample outstanding units for this long to check the RTB_BROADCAST_MAX_QUEUE bound (default: one sample). */
  sampleMs?: number;
  /** A peak observed by a sampler that ran during the whole run (tests, chaos). */
  observedPeak?: number;
  /** A unit still dispatched after this many re-publishes of its attempt is a violation (default 2). */
  maxRepublishes?: number;
  /** Every unit must be terminal (after a run has drained, not on a live system). */
  expectDone?: boolean;
}

export interface CheckReport {
  ok: boolean;
  at: string;
  total: number;
  counts: Record<UnitStatus, number>;
  maxQueue: number;
  peakOutstanding: number;
  samples: number;
  queues: { outbox: QueueState | null; inbox: QueueState | null; dead: QueueState | null; jobs: Record<string, QueueState | null> };
  violations: Violation[];
  /** Things worth knowing that break no rule (units waiting for a leader, ...). */
  notes: string[];
}

/**
 * The invariant checker (`npm run check`, and after every fault test): compares PostgreSQL
 * with the broker.
 * - Timelines: one dispatch and at most one terminal event per attempt, exactly one for
 *   finished attempts, success/error units have theirs (db/src/invariants.ts).
 * - No unit is `dispatched` or `queued` without a message that can reach an agent: past its
 *   timeout plus grace (the reconciler acts by then), a dispatched unit needs ready messages in
 *   the outbox, and a queued one needs jobs waiting in its kind's queue.
 * - No unit stays `dispatched` after being re-published twice (maxRepublishes) for its attempt:
 *   its messages are taken by the broker and come to nothing.
 * - Nothing stays `processing` past RTB_PROCESSING_TIMEOUT_MS plus grace.
 * - Outstanding (dispatched + queued) never above RTB_BROADCAST_MAX_QUEUE, sampled.
 */
export async function checkSystem(opts: CheckOptions): Promise<CheckReport> {
  const { db, broker } = opts;
  const graceMs = opts.graceMs ?? 10_000;
  const violations: Violation[] = [];
  const notes: string[] = [];
  const violate = (rule: string, message: string, units: number[], count = units.length) =>
    violations.push({ rule, message, count, units: units.slice(0, 10) });

  // Sample first: the bound must hold while everything else is read.
  let peak = opts.observedPeak ?? 0;
  let samples = 0;
  const sampleUntil = Date.now() + (opts.sampleMs ?? 0);
  do {
    peak = Math.max(peak, await outstandingNow(db));
    samples++;
    if (Date.now() < sampleUntil) await new Promise((r) => setTimeout(r, 100));
  } while (Date.now() < sampleUntil);
  if (peak > opts.maxQueue) violate("max_queue_exceeded", `outstanding units peaked at ${peak}, above RTB_BROADCAST_MAX_QUEUE=${opts.maxQueue}`, [], peak);

  violations.push(...(await checkTimelines(db)), ...(await checkTallies(db)), ...(await checkWorkflows(db)));
  const counts = await countByStatus(db);
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  const stuck = await stuckUnits(db, { dispatchTimeoutMs: opts.dispatchTimeoutMs, processingTimeoutMs: opts.processingTimeoutMs, graceMs });

  const t = broker.topology;
  const kinds = [...new Set(stuck.queued.map((u) => u.kind))];
  const [outbox = null, inbox = null, dead = null, ...jobStates] = await Promise.all([t.box, t.inbox, t.dead, ...kinds.map((k) => t.jobQueue(k))].map((q) => broker.inspectQueue(q)));
  const jobs = Object.fromEntries(kinds.map((k, i) => [k, jobStates[i] ?? null]));
  const brokerUnknown = [outbox, inbox, dead, ...jobStates].some((q) => q === null);
  if (brokerUnknown) violate("broker_unreachable", "the broker could not be asked for its queues; the checks against it were not made", []);

  if (stuck.dispatched.length > 0) {
    const ids = stuck.dispatched.map((u) => u.id);
    if (outbox && outbox.messages === 0) {
      violate("dispatched_without_message", `dispatched for over ${opts.dispatchTimeoutMs + graceMs} ms and never re-published while the outbox is empty (is an api running its reconciler?)`, ids);
    } else if (outbox) {
      notes.push(`${ids.length} unit(s) dispatched long ago wait in the outbox (${outbox.messages} message(s), ${outbox.consumers} leader(s) consuming)`);
    }
  }
  for (const kind of kinds) {
    const ids = stuck.queued.filter((u) => u.kind === kind).map((u) => u.id);
    const q = jobs[kind];
    if (q && q.messages === 0) {
      violate("queued_without_job", `queued for over ${opts.dispatchTimeoutMs + graceMs} ms while ${t.jobQueue(kind)} has no job waiting`, ids);
    } else if (q) {
      notes.push(`${ids.length} ${kind} unit(s) queued long ago wait in ${t.jobQueue(kind)} (${q.messages} job(s), ${q.consumers} agent(s) consuming)`);
    }
  }
  const minRepublishes = opts.maxRepublishes ?? 2;
  const republished = await republishedWithoutProgress(db, minRepublishes);
  if (republished.length > 0) {
    const most = Math.max(...republished.map((u) => u.republishes));
    violate("republished_without_progress", `still dispatched after ${minRepublishes} or more re-publishes of the same attempt (up to ${most}): its messages are refused or dropped on every try`, republished.map((u) => u.id));
  }
  if (stuck.processing.length > 0) {
    violate("processing_past_timeout", `processing for over ${opts.processingTimeoutMs + graceMs} ms (RTB_PROCESSING_TIMEOUT_MS plus grace) without being expired`, stuck.processing.map((u) => u.id));
  }
  if (opts.expectDone) {
    const open = UNIT_STATUSES.filter((s) => !isTerminal(s)).reduce((n, s) => n + counts[s], 0);
    if (open > 0) {
      const rows = await db.selectFrom("units").select("id").where("status", "not in", TERMINAL).orderBy("id").limit(10).execute();
      violate("not_done", `${open} unit(s) are not terminal`, rows.map((r) => r.id), open);
    }
  }
  if (dead && dead.messages > 0) notes.push(`${dead.messages} message(s) wait in ${t.dead} for inspection`);

  return {
    ok: violations.length === 0,
    at: new Date().toISOString(),
    total,
    counts,
    maxQueue: opts.maxQueue,
    peakOutstanding: peak,
    samples,
    queues: { outbox, inbox, dead, jobs },
    violations,
    notes,
  };
}

/** Poll outstanding units every `everyMs` until stopped; the peak is what the bound is checked against. */
export function sampleOutstanding(db: Db, everyMs = 50): { readonly peak: number; readonly samples: number; stop(): Promise<void> } {
  let peak = 0;
  let samples = 0;
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      try {
        peak = Math.max(peak, await outstandingNow(db));
        samples++;
      } catch {
        // The database may be down on purpose (a fault test): sample again when it is back.
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    get peak() {
      return peak;
    },
    get samples() {
      return samples;
    },
    async stop() {
      stopped = true;
      await loop;
    },
  };
}
