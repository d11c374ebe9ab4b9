import { sql } from "kysely";
import type { Db } from "./database.ts";

/**
 * Units whose kind no agent consumes yet (docs/architecture.md, "Waiting for an agent"). The
 * leader reports such a unit `error` with `noAgent`; the status rules send it back to the
 * backlog not ready (`not_before = 'infinity'`) and without using an attempt
 * (apply-status.ts). It waits there until an agent of its kind announces itself in a
 * heartbeat (releaseWaitingUnits), or the reconciler cancels it after RTB_NO_AGENT_TIMEOUT_MS
 * (cancelLongWaits). kinds_without_agents says which kinds have work but no agent, and since when.
 */

/** Units released by one batch at most; the rest follow with the agent's next heartbeats. */
export const RELEASE_BATCH = 10_000;

/**
 * An agent announced `kinds`: they have an agent now, and units waiting for one of them go
 * back to the backlog, ready (index units_waiting_for_agent; at most RELEASE_BATCH per call,
 * so one heartbeat cannot hold the inbox on a million waiting units). They keep
 * agent_wait_since until routed, so RTB_NO_AGENT_TIMEOUT_MS bounds the whole wait.
 */
export async function releaseWaitingUnits(db: Db, kinds: readonly string[]): Promise<number> {
  const { rows } = await sql<{ n: number }>`
    WITH gone AS (DELETE FROM kinds_without_agents WHERE kind = ANY(${sql.val(kinds)}::text[])),
    released AS (
      UPDATE units SET not_before = NULL, updated_at = now()
      WHERE id IN (
        SELECT id FROM units
        WHERE kind = ANY(${sql.val(kinds)}::text[]) AND agent_wait_since IS NOT NULL AND status = 'pending' AND not_before = 'infinity'
        LIMIT ${RELEASE_BATCH}
      )
      RETURNING 1
    )
    SELECT count(*)::int AS n FROM released`.execute(db);
  return rows[0]?.n ?? 0;
}

export interface KindWithoutAgent {
  kind: string;
  /** When its first unit found no agent. */
  since: Date;
}

/** Kinds with units waiting for an agent, longest waiting first (at most `limit`). */
export async function kindsWithoutAgents(db: Db, limit = 100): Promise<KindWithoutAgent[]> {
  return db.selectFrom("kinds_without_agents").select(["kind", "since"]).orderBy("since").orderBy("kind").limit(limit).execute();
}

/**
 * The reconciler, once a tick: cancel units that have waited for an agent longer than
 * `timeoutMs` (0: never; their timeline says why; an operator retries them once an agent runs), and
 * forget kinds that no longer have a waiting unit (cancelled, or released and routed).
 */
export async function cancelLongWaits(db: Db, timeoutMs: number, limit = 1_000): Promise<{ cancelled: number; kinds: string[] }> {
  return db.transaction().execute(async (trx) => {
    const { rows } = await sql<{ id: number; kind: string }>`
      WITH late AS (
        SELECT id FROM units
        WHERE ${timeoutMs > 0} AND agent_wait_since < now() - make_interval(secs => ${timeoutMs / 1000}) AND status = 'pending'
        ORDER BY agent_wait_since
        LIMIT ${limit}
        FOR UPDATE SKIP LOCKED
      ),
      cancelled AS (
        UPDATE units u SET status = 'cancelled', not_before = NULL, agent_wait_since = NULL, updated_at = now(),
          last_error = 'no agent consumed kind "' || u.kind || '" within RTB_NO_AGENT_TIMEOUT_MS'
        -- The ids again as an array, so the planner probes the primary key instead of hashing the table.
        FROM late WHERE u.id = late.id AND u.id = ANY(ARRAY(SELECT id FROM late))
        RETURNING u.id, u.kind, u.attempt
      ),
      events AS (
        INSERT INTO unit_events (unit_id, attempt, status, at, source, detail)
        SELECT id, attempt, 'cancelled', now(), 'reconciler',
               jsonb_build_object('reason', 'no agent consumed kind "' || kind || '" within RTB_NO_AGENT_TIMEOUT_MS', 'timeoutMs', ${timeoutMs}::bigint)
        FROM cancelled
      )
      SELECT id, kind FROM cancelled`.execute(trx);
    await sql`
      DELETE FROM kinds_without_agents k
      WHERE NOT EXISTS (SELECT FROM units u WHERE u.kind = k.kind AND u.agent_wait_since IS NOT NULL AND u.status = 'pending')`.execute(trx);
    return { cancelled: rows.length, kinds: [...new Set(rows.map((r) => r.kind))] };
  });
}
