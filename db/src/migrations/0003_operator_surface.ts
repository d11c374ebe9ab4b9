import { sql, type Kysely } from "kysely";

/**
 * Issue 4 (operator surface): GET /units lists units newest first, filtered by status or by
 * group, with keyset pagination on id.
 */
export async function up(db: Kysely<any>): Promise<void> {
  // GET /units?status=error (and the redrive of every errored unit): newest first within a status.
  await sql`CREATE INDEX units_by_status ON units (status, id)`.execute(db);
  // GET /units?group=customer-42: one customer's units, newest first.
  await sql`CREATE INDEX units_by_group ON units (group_name, id)`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP INDEX units_by_group, units_by_status`.execute(db);
}
