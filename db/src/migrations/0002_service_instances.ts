import { sql, type Kysely } from "kysely";

/**
 * Issue 3 (crash survival): which leader is active and since when, and every service
 * instance that reported recently, with its own dead-letter count.
 */
export async function up(db: Kysely<any>): Promise<void> {
  // When the leader in leader_id first reported after a different one (a failover, a restart).
  await sql`ALTER TABLE control ADD COLUMN leader_since timestamptz`.execute(db);

  // One row per process lifetime of a leader, agent or api (a restart under the same id is a
  // new row), so counters that restart at zero never overwrite what an earlier run counted.
  await sql`
    CREATE TABLE service_instances (
      service       text NOT NULL CHECK (service IN ('api', 'leader', 'agent')),
      id            text NOT NULL,
      started_at    timestamptz NOT NULL,
      last_seen     timestamptz NOT NULL,
      dead_lettered bigint NOT NULL DEFAULT 0,
      PRIMARY KEY (service, id, started_at)
    )`.execute(db);
  await sql`CREATE INDEX service_instances_by_last_seen ON service_instances (last_seen)`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TABLE service_instances`.execute(db);
  await sql`ALTER TABLE control DROP COLUMN leader_since`.execute(db);
}
