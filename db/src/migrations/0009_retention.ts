import { sql, type Kysely } from "kysely";
import { TERMINAL } from "@rtb/protocol";
import { statusList } from "../status-sql.ts";

/**
 * Issue 15 (retention): finished units and their timelines are deleted once older than
 * RTB_RETENTION (db/src/retention.ts).
 *
 * "Older" is by updated_at: set when a unit becomes terminal, and no statement changes a
 * terminal row but the ones that take it out of a terminal status (retry, redrive), so for a
 * finished unit it is the time it finished.
 */
export async function up(db: Kysely<any>): Promise<void> {
  // The finished units, oldest first: a pass reads the few it prunes, never the rest. Only
  // terminal rows are in it, so the dispatch path (pending and in-flight rows) never touches it.
  await sql`CREATE INDEX units_finished ON units (updated_at) WHERE status IN ${statusList(TERMINAL)}`.execute(db);
  // One row: what pruning removed in all (every replica, every lifetime) and when it last ran.
  // Not in `control`: every top-up updates that row, and a prune must never wait for one.
  await sql`
    CREATE TABLE retention (
      id            boolean PRIMARY KEY DEFAULT true CHECK (id),
      pruned_units  bigint NOT NULL DEFAULT 0,
      pruned_events bigint NOT NULL DEFAULT 0,
      last_run_at   timestamptz,
      last_run_by   text
    )`.execute(db);
  await sql`INSERT INTO retention DEFAULT VALUES`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TABLE retention`.execute(db);
  await sql`DROP INDEX units_finished`.execute(db);
}
