import { sql, type Kysely } from "kysely";

/**
 * Issue 5 (fair use at scale): per-group weights and in-flight limits, and tallies kept by
 * the database itself so that neither dispatch nor GET / reads the whole backlog.
 *
 * A unit is *ready* when it is pending and not waiting for a retry backoff (not_before IS
 * NULL; every top-up and preview first clears not_before of retries whose backoff has ended).
 *
 * Tallies are append-only deltas written by statement-level triggers on units, in the same
 * transaction as the change: they are exactly as committed as the rows they count, and
 * writers never wait on a shared counter row. A tally is the sum of its rows; the api folds
 * the rows together now and then (db/src/tallies.ts). TRUNCATE is not tallied: DELETE instead.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`ALTER TABLE unit_groups
    ADD COLUMN weight double precision NOT NULL DEFAULT 1 CHECK (weight > 0 AND weight <= 1000000),
    ADD COLUMN max_in_flight integer CHECK (max_in_flight >= 1),
    ALTER COLUMN last_served DROP NOT NULL`.execute(db);

  // The ready backlog of one group at one priority, first in first out: a top-up reads the
  // first few units of each group it serves, never the rest.
  await sql`DROP INDEX units_backlog`.execute(db);
  await sql`CREATE INDEX units_ready ON units (group_name, priority, id) WHERE status = 'pending' AND not_before IS NULL`.execute(db);
  // In flight per group, counted by every top-up: at most the outbox plus the agents' slots.
  await sql`CREATE INDEX units_in_flight_by_group ON units (group_name) WHERE status IN ('dispatched', 'queued', 'processing')`.execute(db);

  await sql`CREATE TABLE status_tallies (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, status text NOT NULL, n bigint NOT NULL)`.execute(db);
  await sql`
    CREATE TABLE ready_tallies (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      group_name text NOT NULL,
      priority integer NOT NULL,
      n bigint NOT NULL
    )`.execute(db);

  // Folding deltas leaves dead rows behind: vacuum these small tables early, not at 20 % of them.
  for (const table of ["status_tallies", "ready_tallies"]) {
    await sql`ALTER TABLE ${sql.raw(table)} SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_delay = 0)`.execute(db);
  }

  const ready = sql.raw(`status = 'pending' AND not_before IS NULL`);
  await sql`
    CREATE FUNCTION units_tally_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO status_tallies (status, n) SELECT status, count(*) FROM new_rows GROUP BY status;
      INSERT INTO ready_tallies (group_name, priority, n)
        SELECT group_name, priority, count(*) FROM new_rows WHERE ${ready} GROUP BY group_name, priority;
      RETURN NULL;
    END $$`.execute(db);
  await sql`
    CREATE FUNCTION units_tally_delete() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO status_tallies (status, n) SELECT status, -count(*) FROM old_rows GROUP BY status;
      INSERT INTO ready_tallies (group_name, priority, n)
        SELECT group_name, priority, -count(*) FROM old_rows WHERE ${ready} GROUP BY group_name, priority;
      RETURN NULL;
    END $$`.execute(db);
  // Each changed row counts -1 as it was and +1 as it is; what nets to zero is not written
  // (an update that only touches updated_at writes nothing).
  await sql`
    CREATE FUNCTION units_tally_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO status_tallies (status, n)
        SELECT status, sum(s) FROM (
          SELECT status, -1 AS s FROM old_rows UNION ALL SELECT status, 1 FROM new_rows
        ) AS d GROUP BY status HAVING sum(s) <> 0;
      INSERT INTO ready_tallies (group_name, priority, n)
        SELECT group_name, priority, sum(s) FROM (
          SELECT group_name, priority, -1 AS s FROM old_rows WHERE ${ready}
          UNION ALL SELECT group_name, priority, 1 FROM new_rows WHERE ${ready}
        ) AS d GROUP BY group_name, priority HAVING sum(s) <> 0;
      RETURN NULL;
    END $$`.execute(db);
  for (const [event, table] of [["insert", "NEW TABLE AS new_rows"], ["delete", "OLD TABLE AS old_rows"], ["update", "OLD TABLE AS old_rows NEW TABLE AS new_rows"]] as const) {
    await sql`
      CREATE TRIGGER ${sql.raw(`units_tally_${event}`)} AFTER ${sql.raw(event.toUpperCase())} ON units
      REFERENCING ${sql.raw(table)} FOR EACH STATEMENT EXECUTE FUNCTION ${sql.raw(`units_tally_${event}`)}()`.execute(db);
  }

  // What is there already.
  await sql`INSERT INTO status_tallies (status, n) SELECT status, count(*) FROM units GROUP BY status`.execute(db);
  await sql`INSERT INTO ready_tallies (group_name, priority, n) SELECT group_name, priority, count(*) FROM units WHERE ${ready} GROUP BY group_name, priority`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const event of ["insert", "delete", "update"]) {
    await sql`DROP TRIGGER ${sql.raw(`units_tally_${event}`)} ON units`.execute(db);
    await sql`DROP FUNCTION ${sql.raw(`units_tally_${event}`)}()`.execute(db);
  }
  await sql`DROP TABLE ready_tallies, status_tallies`.execute(db);
  await sql`DROP INDEX units_in_flight_by_group, units_ready`.execute(db);
  await sql`CREATE INDEX units_backlog ON units (priority DESC, group_name, id) WHERE status = 'pending'`.execute(db);
  await sql`ALTER TABLE unit_groups DROP COLUMN max_in_flight, DROP COLUMN weight`.execute(db);
}
