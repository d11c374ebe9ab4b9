import { sql, type Kysely } from "kysely";

/**
 * Issue 5, at scale: the ready tallies of migration 0004 kept as one folded row per key, so
 * the dispatch order reads 1,000 compact rows instead of aggregating a table that folding
 * (DELETE + INSERT of every key) had spread over thousands of pages.
 *
 * - ready_deltas (0004's ready_tallies, renamed): the triggers still append deltas here, in
 *   the writer's transaction, so writers never wait on a shared row.
 * - ready_counts: one row per (priority, group_name), updated in place when the deltas are
 *   folded in (HOT updates: `n` is in no index, and fillfactor leaves room on each page).
 * - ready_levels: the same per priority, so choosing the priorities that can matter reads
 *   one row per priority, not one per group.
 * - ready_tallies becomes a view, counts and deltas together: the sum of `n` per key is still
 *   the count of ready units, for every reader of 0004's table.
 *
 * A count is its folded row plus its deltas. Folding (db/src/tallies.ts) moves deltas into
 * the folded rows in one statement, so a reader sees one or the other.
 *
 * The top-up, the one writer that changes ready units on every call, keeps ready_counts and
 * ready_levels itself instead (db/src/dispatch-units.ts): it holds the lock every folder holds,
 * and sets rtb.ready_counted for its transaction, which the update trigger honours by writing
 * no ready deltas. Without that, each top-up would append a delta per group it served, to be
 * deleted by the next fold: a table churning through dead rows, read by every top-up.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`ALTER TABLE ready_tallies RENAME TO ready_deltas`.execute(db);
  await sql`ALTER INDEX ready_tallies_pkey RENAME TO ready_deltas_pkey`.execute(db);
  const vacuumEarly = sql.raw(`fillfactor = 50, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_delay = 0`);
  await sql`
    CREATE TABLE ready_counts (
      priority integer NOT NULL,
      group_name text NOT NULL,
      n bigint NOT NULL,
      PRIMARY KEY (priority, group_name)
    ) WITH (${vacuumEarly})`.execute(db);
  // A group's ready units at every priority (GET /groups).
  await sql`CREATE INDEX ready_counts_by_group ON ready_counts (group_name)`.execute(db);
  await sql`CREATE TABLE ready_levels (priority integer PRIMARY KEY, n bigint NOT NULL) WITH (${vacuumEarly})`.execute(db);

  await sql`INSERT INTO ready_counts (priority, group_name, n) SELECT priority, group_name, sum(n) FROM ready_deltas GROUP BY 1, 2 HAVING sum(n) <> 0`.execute(db);
  await sql`INSERT INTO ready_levels (priority, n) SELECT priority, sum(n) FROM ready_deltas GROUP BY 1 HAVING sum(n) <> 0`.execute(db);
  await sql`DELETE FROM ready_deltas`.execute(db);
  await sql`
    CREATE VIEW ready_tallies AS
    SELECT group_name, priority, n FROM ready_counts UNION ALL SELECT group_name, priority, n FROM ready_deltas`.execute(db);

  await replaceTallyTriggers(db, "ready_deltas");
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP VIEW ready_tallies`.execute(db);
  await sql`INSERT INTO ready_deltas (group_name, priority, n) SELECT group_name, priority, n FROM ready_counts`.execute(db);
  await sql`DROP TABLE ready_counts, ready_levels`.execute(db);
  await sql`ALTER INDEX ready_deltas_pkey RENAME TO ready_tallies_pkey`.execute(db);
  await sql`ALTER TABLE ready_deltas RENAME TO ready_tallies`.execute(db);
  await replaceTallyTriggers(db, "ready_tallies");
}

/**
 * The trigger functions, appending the ready deltas to ready_deltas (0005) or, as 0004 wrote
 * them, to ready_tallies (down). 0005's also skip the INSERT when no ready unit changed (an
 * inbox update: processing, success), so those writers never even lock ready_deltas, and
 * honour rtb.ready_counted.
 */
async function replaceTallyTriggers(db: Kysely<any>, table: "ready_deltas" | "ready_tallies"): Promise<void> {
  const ready = sql.raw(`status = 'pending' AND not_before IS NULL`);
  const deltas = sql.raw(table);
  const v5 = table === "ready_deltas";
  const when = (rows: string) => sql.raw(v5 ? `IF EXISTS (SELECT FROM ${rows} WHERE status = 'pending' AND not_before IS NULL) THEN` : "IF true THEN");
  await sql`
    CREATE OR REPLACE FUNCTION units_tally_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO status_tallies (status, n) SELECT status, count(*) FROM new_rows GROUP BY status;
      ${when("new_rows")}
        INSERT INTO ${deltas} (group_name, priority, n)
          SELECT group_name, priority, count(*) FROM new_rows WHERE ${ready} GROUP BY group_name, priority;
      END IF;
      RETURN NULL;
    END $$`.execute(db);
  await sql`
    CREATE OR REPLACE FUNCTION units_tally_delete() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO status_tallies (status, n) SELECT status, -count(*) FROM old_rows GROUP BY status;
      ${when("old_rows")}
        INSERT INTO ${deltas} (group_name, priority, n)
          SELECT group_name, priority, -count(*) FROM old_rows WHERE ${ready} GROUP BY group_name, priority;
      END IF;
      RETURN NULL;
    END $$`.execute(db);
  // 0005: a transaction that keeps the ready counts itself (the top-up) says so.
  const countedElsewhere = sql.raw(v5 ? `IF current_setting('rtb.ready_counted', true) = 'on' THEN RETURN NULL; END IF;` : "");
  const changed = sql.raw(
    v5 ? `IF EXISTS (SELECT FROM old_rows WHERE status = 'pending' AND not_before IS NULL) OR EXISTS (SELECT FROM new_rows WHERE status = 'pending' AND not_before IS NULL) THEN` : "IF true THEN",
  );
  await sql`
    CREATE OR REPLACE FUNCTION units_tally_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO status_tallies (status, n)
        SELECT status, sum(s) FROM (
          SELECT status, -1 AS s FROM old_rows UNION ALL SELECT status, 1 FROM new_rows
        ) AS d GROUP BY status HAVING sum(s) <> 0;
      ${countedElsewhere}
      ${changed}
        INSERT INTO ${deltas} (group_name, priority, n)
          SELECT group_name, priority, sum(s) FROM (
            SELECT group_name, priority, -1 AS s FROM old_rows WHERE ${ready}
            UNION ALL SELECT group_name, priority, 1 FROM new_rows WHERE ${ready}
          ) AS d GROUP BY group_name, priority HAVING sum(s) <> 0;
      END IF;
      RETURN NULL;
    END $$`.execute(db);
}
