import { sql, type Kysely } from "kysely";

/**
 * Issue 15 (schedules): a unit enqueued at each occurrence of a cron expression, exactly once
 * whatever the number of api replicas. The database decides: the pass that fires runs under
 * the `schedules` duty lock (duties.ts), reads `now()` for its clock, and each unit's ref is
 * its occurrence (`schedule:<name>@<ISO time>`, unique like every ref), so no second pass can
 * make a second unit for it.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    CREATE TABLE schedules (
      name           text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,100}$'),
      cron           text NOT NULL,
      time_zone      text NOT NULL,
      kind           text NOT NULL CHECK (kind ~ '^[A-Za-z0-9_.-]{1,100}$'),
      group_name     text NOT NULL,
      priority       integer NOT NULL,
      payload        jsonb NOT NULL,
      max_attempts   integer NOT NULL CHECK (max_attempts >= 1),
      missed         text NOT NULL CHECK (missed IN ('skip', 'once', 'each')),
      -- each:N: at most N missed occurrences run after one gap; null for the other policies.
      missed_max     integer CHECK ((missed = 'each') = (missed_max IS NOT NULL) AND (missed_max IS NULL OR missed_max >= 1)),
      paused_at      timestamptz,
      -- The first occurrence neither fired nor skipped yet. It stays while paused (those
      -- occurrences are missed: resume applies the policy to them).
      next_fire_at   timestamptz NOT NULL,
      last_occurrence timestamptz,
      -- No foreign key: units are pruned by retention, the schedule stays.
      last_unit_id   bigint,
      last_fired_at  timestamptz,
      fired          bigint NOT NULL DEFAULT 0,
      skipped        bigint NOT NULL DEFAULT 0,
      created_at     timestamptz NOT NULL DEFAULT now(),
      updated_at     timestamptz NOT NULL DEFAULT now()
    )`.execute(db);
  // The pass and the timer read the earliest due occurrence of the schedules not paused.
  await sql`CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE paused_at IS NULL`.execute(db);
  // Which schedule and occurrence made a unit (null for a producer's): GET /units/:id shows
  // it, GET /units?schedule= filters by it. Nullable without a default: no table rewrite.
  await sql`ALTER TABLE units ADD COLUMN schedule_name text, ADD COLUMN scheduled_for timestamptz`.execute(db);
  // Only scheduled units are in it: other enqueues never touch it.
  await sql`CREATE INDEX units_by_schedule ON units (schedule_name, id) WHERE schedule_name IS NOT NULL`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP INDEX units_by_schedule`.execute(db);
  await sql`ALTER TABLE units DROP COLUMN schedule_name, DROP COLUMN scheduled_for`.execute(db);
  await sql`DROP TABLE schedules`.execute(db);
}
