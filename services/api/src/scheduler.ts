import { fireDueSchedules, msUntilNextFire, type Db } from "@rtb/db";
import { noTracing, type HopSpan, type Logger, type Tracing } from "@rtb/runtime";
import type { Dispatcher } from "./dispatcher.ts";
import type { ApiStats } from "./stats.ts";
import type { Duties } from "./duties.ts";

export interface Scheduler {
  /**
   * Look again: fire what is due, and re-arm the timer at the earliest next occurrence. Called
   * after every schedule change on this api and on every reconciler tick (which is how a
   * change made on another replica reaches this one's timer). Calls coalesce.
   */
  refresh(reason: string): Promise<void>;
  stop(): Promise<void>;
}

/** setTimeout overflows past ~24.8 days; waking early only re-reads the next occurrence. */
const MAX_SLEEP_MS = 60_000;
/** After a pass another replica held, or one that failed: look again this much later. */
const RETRY_MS = 1_000;

/**
 * Fires the schedules (db/src/schedules.ts) at their occurrences: a timer armed at the
 * earliest next occurrence, read from the database as a delay from its own now() (so a host
 * clock that disagrees with the database's moves nothing), then a pass of the `schedules`
 * duty, by the api that holds it (services/api/src/duties.ts; the others arm no timer), under
 * the duty's lock and its lease checked in the pass's transaction: each occurrence makes one
 * unit whatever happens. After a pass that enqueued units, a top-up.
 * Nothing polls: between occurrences, the timer sleeps until the next (at most a minute,
 * and the reconciler's tick re-reads it).
 */
export function startScheduler(deps: {
  db: Db;
  dispatcher: Dispatcher;
  stats: ApiStats;
  logger: Logger;
  graceMs: number;
  duties: Pick<Duties, "holds" | "holder">;
  /** Each firing starts a trace of its own (its unit's); default: not traced. */
  tracing?: Tracing;
}): Scheduler {
  const { db, dispatcher, stats, logger, graceMs, duties } = deps;
  const tracing = deps.tracing ?? noTracing;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | null = null;
  let again = false;
  let stopped = false;

  async function pass(): Promise<void> {
    // Another api holds the duty and fires; this one looks again when it takes it (startDuties' onGained).
    if (!duties.holds("schedules")) {
      clearTimeout(timer);
      return;
    }
    let retryIn: number | null = null;
    const spans: HopSpan[] = [];
    // A new trace per occurrence fired: its span is the root of the unit's trace.
    const trace = tracing.enabled
      ? (schedule: string, occurrence: Date) => {
          const span = tracing.span("fire schedule", undefined, { kind: "producer", attributes: { "rtb.schedule": schedule, "rtb.schedule.occurrence": occurrence.toISOString() } });
          spans.push(span);
          return span.traceparent;
        }
      : undefined;
    try {
      const result = await fireDueSchedules(db, { graceMs, holder: duties.holder, trace });
      if (result.ran) {
        const { fired, skipped, broken, more } = result.value;
        const created = fired.filter((f) => f.created);
        stats.scheduleFired += created.length;
        stats.scheduleSkipped += skipped;
        if (created.length > 0) {
          logger.debug({ units: created.map((f) => ({ schedule: f.schedule, occurrence: f.occurrence.toISOString(), unitId: f.unitId })) }, "schedules fired");
          dispatcher.trigger("schedule fired");
        }
        if (skipped > 0) logger.info({ skipped, schedules: [...new Set(fired.map((f) => f.schedule))] }, "missed schedule occurrences skipped by their policy");
        for (const b of broken) logger.error({ schedule: b.schedule, err: b.error }, "schedule cannot compute its next occurrence: paused");
        if (more) again = true;
      } else {
        // Another replica is in its pass; if what is due is still due once it is done, look again.
        retryIn = RETRY_MS;
      }
    } catch (err) {
      logger.warn({ err }, "schedules pass failed; retrying shortly");
      retryIn = RETRY_MS + Math.random() * RETRY_MS;
      for (const span of spans) span.fail(err);
    }
    for (const span of spans) span.end();
    await arm(retryIn);
  }

  async function arm(retryIn: number | null): Promise<void> {
    let ms: number | null;
    try {
      ms = await msUntilNextFire(db);
    } catch (err) {
      logger.warn({ err }, "cannot read the next schedule occurrence; retrying shortly");
      ms = RETRY_MS;
    }
    clearTimeout(timer);
    if (stopped || ms === null) return;
    // Due now, but the pass was another replica's (or failed): not a busy loop, a second's pause.
    const delay = ms <= 0 && retryIn !== null ? retryIn : Math.min(MAX_SLEEP_MS, Math.max(0, ms) + 2);
    timer = setTimeout(() => void refresh("timer"), delay);
    timer.unref?.();
  }

  function refresh(reason: string): Promise<void> {
    if (stopped) return Promise.resolve();
    logger.trace({ reason }, "schedules: looking again");
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        await pass();
      } while (again && !stopped);
      running = null;
    })();
    return running;
  }

  return {
    refresh,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
