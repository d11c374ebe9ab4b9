import { sql, type Kysely } from "kysely";

/**
 * Issue 14 (a kind with no agent yet is not a failure): a unit the leader could not route
 * (no job queue for its kind) waits in the backlog, not ready, without using an attempt,
 * until an agent of its kind announces itself.
 */
export async function up(db: Kysely<any>): Promise<void> {
  // When the unit first found no agent (kept across re-probes, so the wait is bounded by
  // RTB_NO_AGENT_TIMEOUT_MS from here); cleared once it is routed. While it waits, not_before
  // is 'infinity': not ready, and in no ready count.
  await sql`ALTER TABLE units ADD COLUMN agent_wait_since timestamptz`.execute(db);
  // Only waiting units are in it: enqueues and dispatches never touch it.
  await sql`CREATE INDEX units_waiting_for_agent ON units (kind) WHERE agent_wait_since IS NOT NULL`.execute(db);
  // Kinds with work but no agent, and since when: what GET / and rtb_kind_without_agent_since_seconds show.
  await sql`
    CREATE TABLE kinds_without_agents (
      kind  text PRIMARY KEY,
      since timestamptz NOT NULL
    )`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TABLE kinds_without_agents`.execute(db);
  await sql`DROP INDEX units_waiting_for_agent`.execute(db);
  await sql`ALTER TABLE units DROP COLUMN agent_wait_since`.execute(db);
}
