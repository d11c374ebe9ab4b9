import { CronExpressionParser, type CronExpression } from "cron-parser";
import type { MissedPolicy } from "@rtb/protocol";

/**
 * When a schedule fires, as pure functions of its cron expression, its time zone and the
 * times the database gives (never the host's clock). cron-parser reads the expression in the
 * zone (luxon underneath): 09:00 Europe/Paris is 08:00Z in winter and 07:00Z in summer; a
 * wall time that a spring-forward skips fires at the first moment after it, one a fall-back
 * repeats fires once.
 */

/** A cron expression or a time zone that cannot be used; `field` names which. */
export class ScheduleTimeError extends Error {
  override name = "ScheduleTimeError";
  readonly field: "cron" | "timeZone";
  constructor(field: "cron" | "timeZone", message: string) {
    super(message);
    this.field = field;
  }
}

/**
 * The IANA zone's canonical name (`europe/paris` -> `Europe/Paris`, `utc` -> `UTC`), or a
 * ScheduleTimeError. Intl knows the zones Node's ICU data holds, as cron-parser does.
 */
export function canonicalTimeZone(zone: string): string {
  try {
    return new Intl.DateTimeFormat("en-US", { timeZone: zone }).resolvedOptions().timeZone;
  } catch {
    throw new ScheduleTimeError("timeZone", `unknown time zone ${JSON.stringify(zone)}: expected an IANA name such as UTC or Europe/Paris`);
  }
}

function parse(cron: string, zone: string, after: Date): CronExpression {
  canonicalTimeZone(zone);
  // cron-parser reads "" as every minute, and a lone "@" alias or stray spaces loosely.
  if (cron.trim() === "") throw new ScheduleTimeError("cron", "expected a cron expression, got an empty one");
  try {
    return CronExpressionParser.parse(cron, { tz: zone, currentDate: after });
  } catch (err) {
    throw new ScheduleTimeError("cron", `not a cron expression this api can read (${(err as Error).message}): expected 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first), e.g. "0 9 * * 1-5"`);
  }
}

/**
 * The first `n` occurrences strictly after `after`. A ScheduleTimeError when the expression
 * or zone is bad, or the expression never fires (it is checked at the door with `n = 1`).
 */
export function occurrencesAfter(cron: string, zone: string, after: Date, n: number): Date[] {
  const expression = parse(cron, zone, after);
  const out: Date[] = [];
  try {
    for (let i = 0; i < n && expression.hasNext(); i++) out.push(expression.next().toDate());
  } catch (err) {
    throw new ScheduleTimeError("cron", `this cron expression has no next occurrence (${(err as Error).message})`);
  }
  if (n > 0 && out.length === 0) throw new ScheduleTimeError("cron", "this cron expression has no next occurrence");
  return out;
}

export const nextOccurrence = (cron: string, zone: string, after: Date): Date => occurrencesAfter(cron, zone, after, 1)[0]!;

/** Missed occurrences counted at most after one gap: enumerating them costs up to ~0.5 ms each (luxon, in a zone), in the pass's transaction. */
export const MISSED_COUNT_LIMIT = 1_000;
/** On-time occurrences fired in one pass at most (a per-second schedule late by the grace has 60). */
const ON_TIME_LIMIT = 1_000;

export interface FiringPlan {
  /** The occurrences to enqueue a unit for, oldest first. */
  fire: Date[];
  /** Missed occurrences left out by the policy (at most MISSED_COUNT_LIMIT are counted). */
  skipped: number;
  /** The first occurrence after `now`: the schedule's next_fire_at. */
  next: Date;
}

/**
 * What one pass does for one schedule whose next occurrence is due (`nextFireAt <= now`).
 * Occurrences late by at most `graceMs` are on time and all fire; older ones were missed (the
 * api down, the schedule paused) and the policy says which run: skip none, once the latest,
 * each:N the latest N. `now` is the database's clock.
 */
export function planFiring(s: { cron: string; timeZone: string; nextFireAt: Date; missed: MissedPolicy }, now: Date, graceMs: number): FiringPlan {
  const missedBefore = new Date(now.getTime() - graceMs);
  const fire: Date[] = [];
  let skipped = 0;
  if (s.nextFireAt < missedBefore) {
    const keep = s.missed.policy === "skip" ? 0 : s.missed.policy === "once" ? 1 : s.missed.max;
    // The latest `keep` missed occurrences, walking back from the edge of the grace.
    const back = parse(s.cron, s.timeZone, missedBefore);
    const latest: Date[] = [];
    while (latest.length < keep && back.hasPrev()) {
      const o = back.prev().toDate();
      if (o < s.nextFireAt) break;
      latest.push(o);
    }
    fire.push(...latest.reverse());
    // How many were missed in all, counted forward from the first one (bounded).
    const forward = parse(s.cron, s.timeZone, new Date(s.nextFireAt.getTime() - 1));
    let missed = 0;
    while (missed < MISSED_COUNT_LIMIT && forward.hasNext() && forward.next().toDate() < missedBefore) missed++;
    skipped = Math.max(0, missed - latest.length);
  }
  const from = s.nextFireAt > missedBefore ? s.nextFireAt : missedBefore;
  const onTime = parse(s.cron, s.timeZone, new Date(from.getTime() - 1));
  let next: Date | undefined;
  while (onTime.hasNext()) {
    const o = onTime.next().toDate();
    if (o > now || fire.length >= ON_TIME_LIMIT) {
      next = o;
      break;
    }
    fire.push(o);
  }
  return { fire, skipped, next: next ?? nextOccurrence(s.cron, s.timeZone, now) };
}
