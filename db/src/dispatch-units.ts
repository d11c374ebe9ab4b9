import { sql, type RawBuilder } from "kysely";
import type { Db } from "./database.ts";
import type { Pick } from "./fair-share.ts";
import { countReady } from "./dispatch-inputs.ts";
import { statement, type Statement } from "./prepared.ts";
import { depsResults } from "./deps-results.ts";

// The units a plan's picks stand for: shown by GET /next (dispatch-order.ts) or claimed by the
// top-up (top-up.ts), mapped from picks to units the same way. Not exported from @rtb/db.

/**
 * CTEs `p` (the picks in order: place, group_name, priority, and j: it is the j-th pick of its
 * group and priority) and `u` (the units they stand for: a group's j-th pick at a priority
 * takes its j-th ready unit, lowest ids first, through the units_ready index). A pick whose
 * unit is gone (cancelled, dispatched since the inputs were read) has no `u` row.
 */
function pickedUnits(picks: readonly Pick[]): RawBuilder<unknown> {
  return sql`
    p AS (
      SELECT place, group_name, priority, row_number() OVER (PARTITION BY group_name, priority ORDER BY place) AS j
      FROM unnest(${sql.val(picks.map((x) => x.group))}::text[], ${sql.val(picks.map((x) => x.priority))}::int[]) WITH ORDINALITY AS x (group_name, priority, place)
    ),
    w AS (SELECT group_name, priority, count(*) AS n FROM p GROUP BY group_name, priority),
    u AS (
      SELECT u.*, row_number() OVER (PARTITION BY u.group_name, u.priority ORDER BY u.id) AS j
      FROM w CROSS JOIN LATERAL (
        SELECT id, kind, group_name, priority, attempt, created_at FROM units
        -- Ranges, not equalities, on purpose: with "group_name = w.group_name" PostgreSQL
        -- treats the group as a constant, so "ORDER BY id" is what units_pkey gives too, and
        -- where its statistics still see a backlog of pending units (analyzed before the
        -- dispatch began) it walks the primary key from the first id and filters, past every
        -- unit dispatched since: 18,000 rows per group in a claim of 288. As ranges, only
        -- units_ready gives this order.
        WHERE status = 'pending' AND not_before IS NULL
          AND group_name >= w.group_name AND group_name <= w.group_name AND priority >= w.priority AND priority <= w.priority
        ORDER BY group_name, priority, id LIMIT w.n
      ) AS u
    )`;
}

/** Any constant will do; it only has to be the same in every api replica. */
const TOP_UP_LOCK = 0x727462_01;

/**
 * Take the top-up lock for the rest of the transaction: top-ups run one at a time, and so do
 * the folds of the ready tallies (tallies.ts).
 */
export async function lockTopUps(trx: Db): Promise<void> {
  await sql`SELECT pg_advisory_xact_lock(${TOP_UP_LOCK})`.execute(trx);
}

/**
 * Run `fn` in a top-up's transaction: begun, locked (`lockTopUps`) and marked as keeping
 * ready_counts and ready_levels itself for the units it changes (rtb.ready_counted: the update
 * trigger then writes no ready deltas, migration 0005), in one round trip. The lock must be a
 * statement of its own: a statement's snapshot is taken when it starts, so what reads
 * `outstanding` must start after the lock is held. Committed when `fn` returns, rolled back
 * when it throws.
 */
export async function inTopUp<T>(db: Db, fn: (trx: Db) => Promise<T>): Promise<T> {
  return db.connection().execute(async (conn) => {
    let result: T;
    try {
      // No parameters: pg sends it as a simple query, which may hold several statements.
      await sql.raw(`BEGIN; SELECT pg_advisory_xact_lock(${TOP_UP_LOCK}); SET LOCAL rtb.ready_counted = on`).execute(conn);
      result = await fn(conn);
    } catch (err) {
      // The connection goes back to the pool: never inside a transaction.
      await sql`ROLLBACK`.execute(conn).catch(() => {});
      throw err;
    }
    await sql`COMMIT`.execute(conn);
    return result;
  });
}

/**
 * One statement, in a top-up's transaction (`inTopUp`): the units the picks stand for
 * move to `dispatched` with a new attempt, the ready counts lose them, each gets its
 * `dispatched` event, and the groups served are remembered in pick order (a group's last pick
 * counts: unit_groups.last_served, from the counter in `control`, which the lock protects).
 * `status = 'pending'` in the UPDATE re-checks each row under its row lock, so a unit
 * cancelled meanwhile is skipped, never dispatched. Returns the units taken, in order.
 */
export function claimStatement(picks: readonly Pick[], at: Date): Statement<ClaimedRow> {
  return statement("rtb_claim", sql<ClaimedRow>`
    WITH ${pickedUnits(picks)},
    taken AS (
      UPDATE units SET status = 'dispatched', attempt = units.attempt + 1, dispatched_at = now(), not_before = NULL, updated_at = now()
      -- The ids as an array, not a join with u: the planner cannot estimate u (it guesses 10
      -- rows) and joined it by a nested loop over u per unit, n^2 for a claim of n units
      -- (157 ms of a 186 ms claim of 770); as an array it probes the primary key per unit.
      WHERE units.status = 'pending' AND units.id = ANY(ARRAY(SELECT id FROM u))
      RETURNING units.id, units.attempt, units.kind, units.payload, ${depsResults("units")} AS deps, units.traceparent
    ),
    mine AS (SELECT p.place, p.group_name, p.priority, t.* FROM p JOIN u USING (group_name, priority, j) JOIN taken t ON t.id = u.id),
    ${countReady(sql`SELECT priority, group_name, -count(*) AS n FROM mine GROUP BY priority, group_name`)},
    events AS (INSERT INTO unit_events (unit_id, attempt, status, at, source) SELECT id, attempt, 'dispatched', ${at}::timestamptz, 'api' FROM mine),
    seq AS (UPDATE control SET served_seq = served_seq + ${picks.length} RETURNING served_seq - ${picks.length} AS base),
    served AS (
      INSERT INTO unit_groups (name, last_served)
      SELECT m.group_name, seq.base + max(m.place) FROM mine m CROSS JOIN seq GROUP BY m.group_name, seq.base
      ON CONFLICT (name) DO UPDATE SET last_served = excluded.last_served
    )
    SELECT id, attempt, kind, payload, deps, traceparent FROM mine ORDER BY place`);
}

/** A claimed unit's row: `deps`, its dependencies' results (workflows.ts, depsResults), null without dependencies. */
export interface ClaimedRow {
  id: number;
  attempt: number;
  kind: string;
  payload: unknown;
  deps: Record<string, unknown> | null;
  traceparent: string | null;
}

/** The units of a preview, in pick order. */
export function nextUnitsStatement(picks: readonly Pick[]): Statement<{ id: number; kind: string; group_name: string; priority: number; attempt: number; created_at: Date }> {
  return statement("rtb_next_units", sql<{ id: number; kind: string; group_name: string; priority: number; attempt: number; created_at: Date }>`
    WITH ${pickedUnits(picks)}
    SELECT u.id, u.kind, u.group_name, u.priority, u.attempt, u.created_at
    FROM p JOIN u USING (group_name, priority, j)
    ORDER BY p.place`);
}
