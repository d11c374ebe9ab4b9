import { sql, type Kysely } from "kysely";

/**
 * Issue 12 (inputs that stop the system): re-publishes counted per attempt, the dead-letter
 * totals of pruned service instances, and a repair of values bogus messages already wrote.
 */
export async function up(db: Kysely<any>): Promise<void> {
  // How often the reconciler re-published the unit's attempt `republished_attempt` without it
  // moving on. Keyed by attempt rather than reset by the dispatch, so the top-up (the hot
  // path) writes nothing more: a count for an older attempt reads as 0.
  await sql`ALTER TABLE units ADD COLUMN republishes int NOT NULL DEFAULT 0, ADD COLUMN republished_attempt int`.execute(db);

  // What pruned service_instances rows had counted, per service, so totals stay right.
  await sql`
    CREATE TABLE service_retired (
      service       text PRIMARY KEY CHECK (service IN ('api', 'leader', 'agent')),
      instances     bigint NOT NULL DEFAULT 0,
      dead_lettered bigint NOT NULL DEFAULT 0
    )`.execute(db);

  // A leader report dated in the future froze GET /'s leader; counters beyond any plausible
  // count poisoned the totals. Times are now bounded by the api's clock and counters by
  // instances.ts (DEAD_LETTERED_MAX); repair what was written before.
  await sql`UPDATE control SET leader_reported_at = now() WHERE leader_reported_at > now()`.execute(db);
  await sql`UPDATE control SET leader_since = now() WHERE leader_since > now()`.execute(db);
  await sql`UPDATE service_instances SET dead_lettered = 0 WHERE dead_lettered > 1000000000`.execute(db);
  await sql`DELETE FROM service_instances WHERE started_at > now()`.execute(db);
  await sql`UPDATE unit_events SET at = recorded_at WHERE at > recorded_at + interval '5 minutes'`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TABLE service_retired`.execute(db);
  await sql`ALTER TABLE units DROP COLUMN republishes, DROP COLUMN republished_attempt`.execute(db);
}
