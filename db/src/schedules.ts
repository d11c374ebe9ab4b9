import { sql, type Selectable } from "kysely";
import { parseMissed, scheduleRef, type MissedPolicy } from "@rtb/protocol";
import type { Db } from "./database.ts";
import type { SchedulesTable } from "./schema.ts";
import { asDuty } from "./duties.ts";
import { enqueueUnits, type NewUnit } from "./units.ts";
import { canonicalTimeZone, nextOccurrence, planFiring } from "./schedule-times.ts";

type ScheduleRow = Selectable<SchedulesTable>;

export interface ScheduledUnit {
  kind: string;
  group: string;
  priority: number;
  payload: unknown;
  maxAttempts: number;
}

/** What a schedule is, as POST /schedules and PUT /schedules/:name give it. */
export interface ScheduleDefinition {
  cron: string;
  timeZone: string;
  unit: ScheduledUnit;
  /** `skip`, `once` or `each:N` (protocol's missedPolicy). */
  missed: string;
}

export interface Schedule extends ScheduleDefinition {
  name: string;
  pausedAt: Date | null;
  /** The first occurrence neither fired nor skipped yet (in the past while paused or overdue). */
  nextFireAt: Date;
  lastFired: { occurrence: Date; unitId: number; at: Date } | null;
  fired: number;
  skipped: number;
  createdAt: Date;
  updatedAt: Date;
}

function toSchedule(row: ScheduleRow): Schedule {
  return {
    name: row.name,
    cron: row.cron,
    timeZone: row.time_zone,
    unit: { kind: row.kind, group: row.group_name, priority: row.priority, payload: row.payload, maxAttempts: row.max_attempts },
    missed: row.missed === "each" ? `each:${row.missed_max}` : row.missed,
    pausedAt: row.paused_at,
    nextFireAt: row.next_fire_at,
    lastFired:
      row.last_occurrence && row.last_unit_id !== null && row.last_fired_at ? { occurrence: row.last_occurrence, unitId: row.last_unit_id, at: row.last_fired_at } : null,
    fired: row.fired,
    skipped: row.skipped,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

/** The database's clock: every schedule time is computed from it, never from the host's. */
async function dbNow(db: Db): Promise<Date> {
  const { rows } = await sql<{ now: Date }>`SELECT now() AS now`.execute(db);
  return rows[0]!.now;
}

function definitionColumns(d: ScheduleDefinition) {
  const missed = parseMissed(d.missed);
  return {
    cron: d.cron,
    time_zone: canonicalTimeZone(d.timeZone),
    kind: d.unit.kind,
    group_name: d.unit.group,
    priority: d.unit.priority,
    payload: JSON.stringify(d.unit.payload === undefined ? {} : d.unit.payload),
    max_attempts: d.unit.maxAttempts,
    missed: missed.policy,
    missed_max: missed.policy === "each" ? missed.max : null,
  };
}

/**
 * A new schedule, its first occurrence the first after the database's now; null when one
 * with this name exists (nothing is changed). The definition must have passed the api's
 * checks (cron and zone: schedule-times.ts).
 */
export async function createSchedule(db: Db, name: string, d: ScheduleDefinition & { paused: boolean }): Promise<Schedule | null> {
  const now = await dbNow(db);
  const row = await db
    .insertInto("schedules")
    .values({ name, ...definitionColumns(d), next_fire_at: nextOccurrence(d.cron, d.timeZone, now), paused_at: d.paused ? now : null })
    .onConflict((oc) => oc.column("name").doNothing())
    .returningAll()
    .executeTakeFirst();
  return row ? toSchedule(row) : null;
}

/**
 * A schedule's new definition (its name, what it fired and its counts stay). A changed cron
 * expression or zone starts again from the first occurrence after now; an unchanged one keeps
 * its next occurrence. `paused` undefined leaves it as it is. Null: no such schedule.
 */
export async function replaceSchedule(db: Db, name: string, d: ScheduleDefinition & { paused?: boolean | undefined }): Promise<Schedule | null> {
  const current = await db.selectFrom("schedules").selectAll().where("name", "=", name).forUpdate().executeTakeFirst();
  if (!current) return null;
  const now = await dbNow(db);
  const columns = definitionColumns(d);
  const moved = columns.cron !== current.cron || columns.time_zone !== current.time_zone;
  const pausedAt = d.paused === undefined ? current.paused_at : d.paused ? (current.paused_at ?? now) : null;
  const row = await db
    .updateTable("schedules")
    .set({ ...columns, paused_at: pausedAt, next_fire_at: moved ? nextOccurrence(d.cron, d.timeZone, now) : current.next_fire_at, updated_at: now })
    .where("name", "=", name)
    .returningAll()
    .executeTakeFirstOrThrow();
  return toSchedule(row);
}

/** The schedule as it was, now deleted (the units it made stay); null: no such schedule. */
export async function deleteSchedule(db: Db, name: string): Promise<Schedule | null> {
  const row = await db.deleteFrom("schedules").where("name", "=", name).returningAll().executeTakeFirst();
  return row ? toSchedule(row) : null;
}

/**
 * Pause (it fires nothing) or resume. Resuming keeps next_fire_at where the pause left it, so
 * the occurrences the pause covered are missed occurrences for the next pass: the schedule's
 * policy decides (skip, the default, runs none of them). Null: no such schedule.
 */
export async function setSchedulePaused(db: Db, name: string, paused: boolean): Promise<Schedule | null> {
  const row = await db
    .updateTable("schedules")
    .set(paused ? { paused_at: sql`COALESCE(paused_at, now())`, updated_at: sql`CASE WHEN paused_at IS NULL THEN now() ELSE updated_at END` } : { paused_at: null, updated_at: sql`CASE WHEN paused_at IS NULL THEN updated_at ELSE now() END` })
    .where("name", "=", name)
    .returningAll()
    .executeTakeFirst();
  return row ? toSchedule(row) : null;
}

export async function findSchedule(db: Db, name: string): Promise<Schedule | null> {
  const row = await db.selectFrom("schedules").selectAll().where("name", "=", name).executeTakeFirst();
  return row ? toSchedule(row) : null;
}

/** Schedules by name, in code point order; `nextAfter` continues the listing (null: no more). */
export async function listSchedules(db: Db, opts: { limit: number; after?: string }): Promise<{ schedules: Schedule[]; nextAfter: string | null }> {
  let q = db.selectFrom("schedules").selectAll();
  if (opts.after !== undefined) q = q.where(sql<boolean>`name COLLATE "C" > ${opts.after}`);
  const rows = await q.orderBy(sql`name COLLATE "C"`).limit(opts.limit + 1).execute();
  const more = rows.length > opts.limit;
  const page = more ? rows.slice(0, opts.limit) : rows;
  return { schedules: page.map(toSchedule), nextAfter: more ? page.at(-1)!.name : null };
}

export interface ScheduleSummary {
  count: number;
  paused: number;
  /** The earliest next occurrence of a schedule not paused. */
  nextFireAt: Date | null;
}

export async function summarizeSchedules(db: Db): Promise<ScheduleSummary> {
  const row = await db
    .selectFrom("schedules")
    .select([
      sql<number>`count(*)::int`.as("count"),
      sql<number>`(count(*) FILTER (WHERE paused_at IS NOT NULL))::int`.as("paused"),
      sql<Date | null>`min(next_fire_at) FILTER (WHERE paused_at IS NULL)`.as("next"),
    ])
    .executeTakeFirstOrThrow();
  return { count: row.count, paused: row.paused, nextFireAt: row.next };
}

/**
 * Milliseconds from the database's now to the earliest next occurrence of a schedule not
 * paused (0 or less: due), or null when none will fire. Subtracted in SQL, so the timer the
 * api arms from it does not depend on the host's clock agreeing with the database's.
 */
export async function msUntilNextFire(db: Db): Promise<number | null> {
  const { rows } = await sql<{ ms: number | null }>`
    SELECT (EXTRACT(EPOCH FROM (min(next_fire_at) - now())) * 1000)::float8 AS ms FROM schedules WHERE paused_at IS NULL`.execute(db);
  return rows[0]?.ms ?? null;
}

export interface FiredOccurrence {
  schedule: string;
  occurrence: Date;
  unitId: number;
  /** false: the occurrence's unit existed already (its ref): nothing was made. */
  created: boolean;
}

export interface FiringPass {
  fired: FiredOccurrence[];
  /** Missed occurrences skipped by their schedules' policies. */
  skipped: number;
  /** Schedules whose next occurrence could not be computed: paused, with the reason. */
  broken: { schedule: string; error: string }[];
  /** More schedules were due than one pass takes: run another. */
  more: boolean;
}

/** Schedules taken by one pass at most; the rest are taken by the next one, at once. */
const SCHEDULES_PER_PASS = 100;

/**
 * One pass of the `schedules` duty: enqueue a unit for every due occurrence, by the
 * database's clock, and move each schedule to its next occurrence, in one transaction.
 * `{ ran: false }`: another replica holds the duty and does this pass (or, with `holder`, the
 * lease on it is not `holder`'s: duties.ts).
 *
 * Exactly once per occurrence, by three locks of which any one is enough: the duty's
 * advisory lock (one pass at a time across replicas); the due rows read FOR UPDATE (a pass
 * that got past the lock anyway waits for the other's commit, then re-reads the row and finds
 * it no longer due); and the unit's ref, which is its occurrence (`schedule:<name>@<ISO>`),
 * inserted through enqueueUnits' ON CONFLICT (ref): an occurrence fired again (a schedule set
 * back, a name re-created) returns its existing unit instead of making a second.
 */
export async function fireDueSchedules(db: Db, opts: FiringOptions & { holder?: string }): Promise<{ ran: false } | { ran: true; value: FiringPass }> {
  return asDuty(db, "schedules", (trx) => fireDue(trx, opts), opts.holder);
}

/** The pass without the duty lock (fireDueSchedules takes it; the tests call this directly to race two). */
export interface FiringOptions {
  graceMs: number;
  /** The trace each occurrence's unit starts in (a traceparent), by schedule and occurrence; absent: none. */
  trace?: ((schedule: string, occurrence: Date) => string | undefined) | undefined;
}

export async function fireDue(db: Db, opts: FiringOptions): Promise<FiringPass> {
  const now = await dbNow(db);
  const due = await db
    .selectFrom("schedules")
    .selectAll()
    .where("paused_at", "is", null)
    .where("next_fire_at", "<=", sql<Date>`now()`)
    .orderBy("next_fire_at")
    .limit(SCHEDULES_PER_PASS + 1)
    .forUpdate()
    .execute();
  const rows = due.slice(0, SCHEDULES_PER_PASS);
  const units: NewUnit[] = [];
  const plans: { row: ScheduleRow; fire: Date[]; skipped: number; next: Date }[] = [];
  const broken: FiringPass["broken"] = [];
  for (const row of rows) {
    try {
      const missed: MissedPolicy = row.missed === "each" ? { policy: "each", max: row.missed_max ?? 1 } : { policy: row.missed };
      const plan = planFiring({ cron: row.cron, timeZone: row.time_zone, nextFireAt: row.next_fire_at, missed }, now, opts.graceMs);
      plans.push({ row, ...plan });
      for (const occurrence of plan.fire) {
        units.push({
          kind: row.kind,
          group: row.group_name,
          priority: row.priority,
          payload: row.payload,
          ref: scheduleRef(row.name, occurrence),
          maxAttempts: row.max_attempts,
          schedule: { name: row.name, occurrence },
          traceparent: opts.trace?.(row.name, occurrence) ?? null,
        });
      }
    } catch (err) {
      // A zone the host's time zone data no longer has, say: it could never fire. Paused,
      // so it neither fails every pass nor holds a place among the due ones.
      broken.push({ schedule: row.name, error: (err as Error).message });
    }
  }
  const results = await enqueueUnits(db, units);
  const fired: FiredOccurrence[] = units.map((u, i) => ({ schedule: u.schedule!.name, occurrence: u.schedule!.occurrence, unitId: results[i]!.id, created: results[i]!.created }));
  if (plans.length > 0) {
    const last = (name: string) => fired.filter((f) => f.schedule === name).at(-1);
    await sql`
      UPDATE schedules s SET
        next_fire_at = v.next,
        last_occurrence = COALESCE(v.occurrence, s.last_occurrence),
        last_unit_id = COALESCE(v.unit_id, s.last_unit_id),
        last_fired_at = CASE WHEN v.unit_id IS NULL THEN s.last_fired_at ELSE now() END,
        fired = s.fired + v.created,
        skipped = s.skipped + v.skipped
      FROM unnest(
        ${sql.val(plans.map((p) => p.row.name))}::text[],
        ${sql.val(plans.map((p) => p.next))}::timestamptz[],
        ${sql.val(plans.map((p) => last(p.row.name)?.occurrence ?? null))}::timestamptz[],
        ${sql.val(plans.map((p) => last(p.row.name)?.unitId ?? null))}::bigint[],
        ${sql.val(plans.map((p) => fired.filter((f) => f.schedule === p.row.name && f.created).length))}::int[],
        ${sql.val(plans.map((p) => p.skipped))}::int[]
      ) AS v (name, next, occurrence, unit_id, created, skipped)
      WHERE s.name = v.name`.execute(db);
  }
  if (broken.length > 0) {
    await db.updateTable("schedules").set({ paused_at: sql`now()`, updated_at: sql`now()` }).where("name", "in", broken.map((b) => b.schedule)).execute();
  }
  return { fired, skipped: plans.reduce((n, p) => n + p.skipped, 0), broken, more: due.length > SCHEDULES_PER_PASS };
}
