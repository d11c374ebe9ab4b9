import { sql } from "kysely";
import type { Db } from "./database.ts";
import { zeroCounts, type UnitStatus } from "@rtb/protocol";
import type { Violation } from "./invariants.ts";
import { lockTopUps } from "./dispatch-units.ts";

/**
 * Counts kept by the database (migrations 0004, 0005): triggers on units append deltas to
 * status_tallies and ready_deltas in the same transaction as each change, so a sum over a
 * tally is exact for what has committed. GET / reads the counts per status from here instead
 * of counting the whole table; the dispatch order reads the ready units per group and
 * priority (ready_counts, ready_levels, plus the deltas not folded yet; the view
 * ready_tallies shows both).
 */
export async function tallyByStatus(db: Db): Promise<Record<UnitStatus, number>> {
  const rows = await db
    .selectFrom("status_tallies")
    .select(["status", (eb) => eb.fn.sum<string>("n").as("n")])
    .groupBy("status")
    .execute();
  const counts = zeroCounts();
  for (const r of rows) counts[r.status] = Number(r.n);
  return counts;
}

/**
 * Fold the tallies' deltas so that reading them stays cheap; the cost follows the activity
 * since the last fold, not the number of groups. Each fold is one statement, atomic: a reader
 * sees the deltas or their sum, never both.
 *
 * - Ready units (migration 0005): every delta moves into ready_counts (one row per group and
 *   priority, updated in place) and ready_levels (one per priority); rows that reached zero
 *   go. Under the top-up lock, as the top-up keeps those rows itself (dispatch-units.ts): one
 *   writer of them at a time, so no two can deadlock or fold the same delta.
 * - Per status: the rows of each key that has more than one are replaced by their sum (a
 *   handful of keys; safe to run concurrently: a delta is deleted by one statement only).
 *
 * Returns the keys folded.
 */
export async function compactTallies(db: Db): Promise<{ status: number; ready: number }> {
  const ready = await db.transaction().execute(async (trx) => {
    await lockTopUps(trx);
    const { rows } = await sql<{ n: number }>`
      WITH gone AS (DELETE FROM ready_deltas RETURNING priority, group_name, n),
      folded AS (SELECT priority, group_name, sum(n)::bigint AS n FROM gone GROUP BY priority, group_name),
      into_counts AS (
        INSERT INTO ready_counts (priority, group_name, n) SELECT priority, group_name, n FROM folded WHERE n <> 0
        ON CONFLICT (priority, group_name) DO UPDATE SET n = ready_counts.n + excluded.n
      ),
      into_levels AS (
        INSERT INTO ready_levels (priority, n) SELECT priority, sum(n) FROM folded GROUP BY priority HAVING sum(n) <> 0
        ON CONFLICT (priority) DO UPDATE SET n = ready_levels.n + excluded.n
      )
      SELECT count(*)::int AS n FROM folded`.execute(trx);
    // A group whose ready units all went (a statement sees its own earlier writes, not a CTE's).
    await sql`DELETE FROM ready_counts WHERE n = 0`.execute(trx);
    await sql`DELETE FROM ready_levels WHERE n = 0`.execute(trx);
    return rows[0]?.n ?? 0;
  });
  const status = await sql<{ n: number }>`
    WITH busy AS (SELECT status FROM status_tallies GROUP BY status HAVING count(*) > 1 OR sum(n) = 0),
    gone AS (DELETE FROM status_tallies t USING busy WHERE t.status = busy.status RETURNING t.status, t.n),
    kept AS (INSERT INTO status_tallies (status, n) SELECT status, sum(n) FROM gone GROUP BY status HAVING sum(n) <> 0 RETURNING 1)
    SELECT count(*)::int AS n FROM busy`.execute(db);
  return { status: status.rows[0]?.n ?? 0, ready };
}

/**
 * The tallies against an exact count, in one statement (one snapshot): a violation per status,
 * and one for the groups (or priorities: ready_levels) whose ready count differs. A full
 * scan: for the checker, not for every request.
 */
export async function checkTallies(db: Db): Promise<Violation[]> {
  const { rows } = await sql<{ what: string; key: string; exact: string; kept: string }>`
    WITH exact_status AS (SELECT status AS key, count(*) AS n FROM units GROUP BY status),
    kept_status AS (SELECT status AS key, sum(n) AS n FROM status_tallies GROUP BY status),
    exact_ready AS (SELECT group_name || ' @' || priority AS key, count(*) AS n FROM units WHERE status = 'pending' AND not_before IS NULL GROUP BY group_name, priority),
    kept_ready AS (SELECT group_name || ' @' || priority AS key, sum(n) AS n FROM ready_tallies GROUP BY group_name, priority),
    exact_level AS (SELECT 'every group @' || priority AS key, count(*) AS n FROM units WHERE status = 'pending' AND not_before IS NULL GROUP BY priority),
    kept_level AS (
      SELECT 'every group @' || priority AS key, sum(n) AS n
      FROM (SELECT priority, n FROM ready_levels UNION ALL SELECT priority, n FROM ready_deltas) AS x GROUP BY priority
    )
    SELECT 'status' AS what, key, coalesce(e.n, 0) AS exact, coalesce(k.n, 0) AS kept
    FROM exact_status e FULL JOIN kept_status k USING (key) WHERE coalesce(e.n, 0) <> coalesce(k.n, 0)
    UNION ALL
    SELECT 'ready', key, coalesce(e.n, 0), coalesce(k.n, 0)
    FROM exact_ready e FULL JOIN kept_ready k USING (key) WHERE coalesce(e.n, 0) <> coalesce(k.n, 0)
    UNION ALL
    SELECT 'ready', key, coalesce(e.n, 0), coalesce(k.n, 0)
    FROM exact_level e FULL JOIN kept_level k USING (key) WHERE coalesce(e.n, 0) <> coalesce(k.n, 0)`.execute(db);
  const status = rows.filter((r) => r.what === "status");
  const ready = rows.filter((r) => r.what === "ready");
  const violations: Violation[] = [];
  if (status.length > 0) {
    violations.push({
      rule: "status_tallies_exact",
      message: `GET /'s counts differ from the table: ${status.map((r) => `${r.key} ${r.kept} (exact ${r.exact})`).join(", ")}`,
      count: status.length,
      units: [],
    });
  }
  if (ready.length > 0) {
    violations.push({
      rule: "ready_tallies_exact",
      message: `the ready count used by dispatch differs from the table for ${ready.length} group(s), e.g. ${ready.slice(0, 3).map((r) => `${r.key}: ${r.kept} (exact ${r.exact})`).join(", ")}`,
      count: ready.length,
      units: [],
    });
  }
  return violations;
}

/** The pending units by what they wait for: nothing (ready), a clock, or an agent of their kind. */
export interface BacklogShape {
  /** Pending and ready: what GET /next previews and the top-up takes. */
  ready: number;
  /** Pending until a time: delayed (runAt, delayMs) or in a retry backoff; due ones until the next top-up releases them. */
  onClock: number;
  /** Pending until an agent of their kind announces itself (migration 0007). */
  forAgents: number;
  /** The earliest time one of the units on a clock is due (null: none). */
  nextDueAt: Date | null;
}

/**
 * The columns of the backlog's shape, for a statement that reads them with others in one
 * snapshot (`summarize`): the pending count and the ready count from the tallies, the units
 * waiting for an agent from their partial index (few, and only while a kind has no agent), the
 * earliest due time from the index of units on a clock. Cheap at any size: a million delayed
 * units are one index probe here, never counted one by one.
 */
export const backlogColumns = sql`
  (SELECT sum(n) FROM status_tallies WHERE status = 'pending') AS pending,
  (SELECT sum(n) FROM (SELECT n FROM ready_levels UNION ALL SELECT n FROM ready_deltas) AS r) AS ready,
  (SELECT count(*)::int FROM units WHERE agent_wait_since IS NOT NULL AND status = 'pending' AND not_before = 'infinity') AS for_agents,
  (SELECT min(not_before) FROM units WHERE status = 'pending' AND not_before IS NOT NULL AND not_before < 'infinity') AS next_due_at`;

export interface BacklogColumns {
  pending: string | null;
  ready: string | null;
  for_agents: number;
  next_due_at: Date | null;
}

/** The shape from `backlogColumns`: the units on a clock are the pending ones that are neither ready nor waiting for an agent. */
export function toBacklogShape(r: BacklogColumns): BacklogShape {
  const pending = Number(r.pending ?? 0);
  const ready = Number(r.ready ?? 0);
  return { ready, onClock: Math.max(0, pending - ready - r.for_agents), forAgents: r.for_agents, nextDueAt: r.next_due_at };
}

/** The backlog's shape in one statement (one snapshot): GET /units. */
export async function backlogShape(db: Db): Promise<BacklogShape> {
  const { rows } = await sql<BacklogColumns>`SELECT ${backlogColumns}`.execute(db);
  return toBacklogShape(rows[0]!);
}
