import { sql, type Kysely } from "kysely";

/**
 * Issue 4 (operator surface): GET /units lists units newest first, filtered by status or by
 * group, with keyset pagination on id; the dashboard reads the last minutes of events.
 */
export async function up(db: Kysely<any>): Promise<void> {
  // GET /units?status=error (and the redrive of every errored unit): newest first within a status.
  await sql`CREATE INDEX units_by_status ON units (status, id)`.execute(db);
  // GET /units?group=customer-42: one customer's units, newest first.
  await sql`CREATE INDEX units_by_group ON units (group_name, id)`.execute(db);
  // Throughput over the last minutes. Events are appended in time order, so a BRIN index (a
  // few pages for millions of rows, next to nothing to maintain) narrows the scan to the tail.
  await sql`CREATE INDEX unit_events_by_time ON unit_events USING brin (recorded_at)`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP INDEX unit_events_by_time, units_by_group, units_by_status`.execute(db);
}
