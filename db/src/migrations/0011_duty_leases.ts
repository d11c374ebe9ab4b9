import { sql, type Kysely } from "kysely";

/**
 * Issue 18 (api replicas): the work done once across api replicas (the reconciler, schedules,
 * retention, the tally folds) is held by one api at a time under a lease (db/src/duties.ts):
 * one row per duty, taken when free or expired, renewed by its holder, expired when the holder
 * stops renewing (it died) so another api takes it. A row, not a session advisory lock: GET /
 * can show who holds what, and a lease works through a transaction-pooling PgBouncer, where a
 * session's lock would stay with whichever server connection took it.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    CREATE TABLE duty_leases (
      duty       text PRIMARY KEY,
      holder     text NOT NULL,
      since      timestamptz NOT NULL,
      renewed_at timestamptz NOT NULL,
      expires_at timestamptz NOT NULL,
      handovers  bigint NOT NULL DEFAULT 0
    )`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TABLE duty_leases`.execute(db);
}
