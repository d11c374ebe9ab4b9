import { sql, type Transaction } from "kysely";
import { TERMINAL } from "@rtb/protocol";
import type { Db } from "./database.ts";
import type { Database } from "./schema.ts";
import { statusList } from "./status-sql.ts";

/**
 * Retention (RTB_RETENTION, migration 0009): finished units (success, error, cancelled) that
 * finished longer ago than the retention are deleted with their timelines, a batch per
 * transaction, by one api replica at a time (asDuty "retention", duties.ts).
 */

/** What one batch, or several, removed. */
export interface Pruned {
  units: number;
  events: number;
}

/**
 * Finished longer ago than `retentionMs` (by updated_at, which a terminal row keeps: migration
 * 0009), and needed by nobody: not a step of a workflow still running (GET /workflows/:id shows
 * every step until it ends), no unit that is not finished waits for it (its result is
 * handed to them when they are dispatched), and no callback delivery of it is still pending
 * (migration 0013: deleting it would lose a delivery promised at least once; the unit goes once
 * its deliveries are delivered or given up, index callbacks_by_unit).
 */
const finishedBefore = (retentionMs: number) =>
  sql<boolean>`status IN ${statusList(TERMINAL)} AND updated_at < now() - make_interval(secs => ${retentionMs / 1000})
    AND (workflow_id IS NULL OR EXISTS (SELECT FROM workflows w WHERE w.id = units.workflow_id AND w.status <> 'running'))
    AND (NOT has_dependents OR NOT EXISTS (
      SELECT FROM unit_deps d JOIN units x ON x.id = d.unit_id WHERE d.depends_on = units.id AND x.status NOT IN ${statusList(TERMINAL)}))
    AND NOT EXISTS (SELECT FROM callbacks c WHERE c.unit_id = units.id AND c.state = 'pending')`;

/**
 * One batch in the duty's transaction: up to `limit` finished units past the retention, oldest
 * first, their events, and the totals (table `retention`, with when and by whom it ran).
 *
 * Locks: the units are locked first (FOR UPDATE SKIP LOCKED: a unit an operator is retrying
 * right now is left for the next pass, and a unit retried since this statement's snapshot is
 * re-checked, no longer terminal, and skipped). Only then are their events read and deleted,
 * in a statement of its own: its snapshot is taken with the locks held, and anything that adds
 * an event to a unit takes a key-share lock on the unit (the foreign key), which waits for
 * ours, so every event of these units is seen and counted, and none of a unit kept is
 * touched. The units go last (the foreign key's ON DELETE CASCADE then finds nothing). The
 * delete trigger of migration 0004 takes them out of status_tallies, so GET / stays exact;
 * they are terminal, never ready, so ready_deltas (what the top-up reads) is not written.
 * Nothing here waits on a lock the dispatch path holds: the top-up touches pending and
 * in-flight rows only, and its own advisory lock is another key.
 */
export async function pruneBatch(trx: Transaction<Database>, opts: { retentionMs: number; limit: number; by: string }): Promise<Pruned> {
  const picked = await sql<{ id: number }>`
    SELECT id FROM units WHERE ${finishedBefore(opts.retentionMs)}
    ORDER BY updated_at
    LIMIT ${opts.limit}
    FOR UPDATE SKIP LOCKED`.execute(trx);
  const ids = picked.rows.map((r) => r.id);
  let events = 0;
  if (ids.length > 0) {
    const { rows } = await sql<{ n: number }>`
      WITH gone AS (DELETE FROM unit_events WHERE unit_id = ANY(${sql.val(ids)}::bigint[]) RETURNING 1)
      SELECT count(*)::int AS n FROM gone`.execute(trx);
    events = rows[0]?.n ?? 0;
  }
  if (ids.length > 0) {
    // Their edges, both ways (a dependent kept keeps no edge to a dependency gone).
    await sql`DELETE FROM unit_deps WHERE unit_id = ANY(${sql.val(ids)}::bigint[])`.execute(trx);
    await sql`DELETE FROM unit_deps WHERE depends_on = ANY(${sql.val(ids)}::bigint[])`.execute(trx);
    // Their callbacks' deliveries (migration 0013), all delivered or given up (finishedBefore).
    // None becomes pending meanwhile: only a unit's end writes one, an UPDATE of a unit locked
    // here; and a delivery settled since the snapshot only leaves its unit for the next pass.
    await sql`DELETE FROM callbacks WHERE unit_id = ANY(${sql.val(ids)}::bigint[])`.execute(trx);
  }
  const { rows } = await sql<{ units: number }>`
    WITH gone AS (DELETE FROM units WHERE id = ANY(${sql.val(ids)}::bigint[]) RETURNING 1),
    n AS (SELECT count(*)::int AS units FROM gone)
    UPDATE retention SET
      pruned_units = pruned_units + n.units,
      pruned_events = pruned_events + ${events},
      last_run_at = now(),
      last_run_by = ${opts.by}
    FROM n
    WHERE retention.id
    RETURNING n.units`.execute(trx);
  // Workflows finished past the retention whose steps are all gone.
  await sql`
    DELETE FROM workflows WHERE id = ANY(ARRAY(
      SELECT w.id FROM workflows w
      WHERE w.finished_at < now() - make_interval(secs => ${opts.retentionMs / 1000})
        AND NOT EXISTS (SELECT FROM units u WHERE u.workflow_id = w.id)
      ORDER BY w.finished_at LIMIT ${opts.limit}))`.execute(trx);
  return { units: rows[0]?.units ?? 0, events };
}

export interface RetentionTotals {
  /** Pruned in all, by every replica in every lifetime. */
  pruned: Pruned;
  /** The last pass (of any replica), whether it found anything or not; null: none yet. */
  lastRunAt: Date | null;
  lastRunBy: string | null;
}

export async function retentionTotals(db: Db): Promise<RetentionTotals> {
  const row = await db.selectFrom("retention").selectAll().executeTakeFirstOrThrow();
  return { pruned: { units: row.pruned_units, events: row.pruned_events }, lastRunAt: row.last_run_at, lastRunBy: row.last_run_by };
}

/**
 * Finished units past the retention not pruned yet, counted up to `cap` (through the index of
 * finished units, so at most `cap` entries are read): `cap` means "at least".
 */
export async function pruneDue(db: Db, retentionMs: number, cap: number): Promise<number> {
  const { rows } = await sql<{ n: number }>`
    SELECT count(*)::int AS n FROM (SELECT 1 FROM units WHERE ${finishedBefore(retentionMs)} LIMIT ${cap}) due`.execute(db);
  return rows[0]?.n ?? 0;
}

/**
 * Units in the table and units pruned, in one snapshot (a batch deletes its units and adds
 * them to the total in one transaction): their sum is every unit ever enqueued, while pruning
 * runs. A count of the table: for runs that check what they enqueued (chaos), not for GET /.
 */
export async function unitsKeptAndPruned(db: Db): Promise<{ kept: number; pruned: number }> {
  const { rows } = await sql<{ kept: number; pruned: number }>`
    SELECT (SELECT count(*) FROM units)::int AS kept, (SELECT pruned_units FROM retention) AS pruned`.execute(db);
  return rows[0] ?? { kept: 0, pruned: 0 };
}
