import { sql, type Kysely } from "kysely";

/**
 * Issue 19 (traces across every hop): a unit keeps the trace context it was enqueued in, a
 * W3C traceparent (the api's enqueue span, or the producer's own when the api does not
 * trace), so that every dispatch of it, retries included, continues the same trace. Null: the
 * unit has no trace. A nullable column without a default: adding it rewrites no row.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`ALTER TABLE units ADD COLUMN traceparent text`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`ALTER TABLE units DROP COLUMN traceparent`.execute(db);
}
