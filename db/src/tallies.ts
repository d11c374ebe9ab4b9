import { sql } from "kysely";
import type { Db } from "./database.ts";
import { UNIT_STATUSES, type UnitStatus } from "./schema.ts";
import type { Violation } from "./invariants.ts";

/**
 * Counts kept by the database (migration 0004): triggers on units append deltas to
 * status_tallies and ready_tallies in the same transaction as each change, so a sum over a
 * tally is exact for what has committed. GET / reads the counts per status from here instead
 * of counting the whole table; the dispatch order reads the ready units per group.
 */
export async function tallyByStatus(db: Db): Promise<Record<UnitStatus, number>> {
  const rows = await db
    .selectFrom("status_tallies")
    .select(["status", (eb) => eb.fn.sum<string>("n").as("n")])
    .groupBy("status")
    .execute();
  const counts = Object.fromEntries(UNIT_STATUSES.map((s) => [s, 0])) as Record<UnitStatus, number>;
  for (const r of rows) counts[r.status] = Number(r.n);
  return counts;
}

/**
 * Fold the deltas of each key that has more than one row into one row (and drop the keys
 * that sum to zero), so reading a tally stays cheap. Only the keys written since the last
 * fold are rewritten: the cost follows the activity, not the number of groups. One statement
 * per tally, atomic: a reader sees the deltas or their sum, never both. Safe to run
 * concurrently (another api replica): a delta is deleted by one statement only, and that
 * statement adds it back into its sum. Returns the keys folded.
 */
export async function compactTallies(db: Db): Promise<{ status: number; ready: number }> {
  const status = await sql<{ n: number }>`
    WITH busy AS (SELECT status FROM status_tallies GROUP BY status HAVING count(*) > 1 OR sum(n) = 0),
    gone AS (DELETE FROM status_tallies t USING busy WHERE t.status = busy.status RETURNING t.status, t.n),
    kept AS (INSERT INTO status_tallies (status, n) SELECT status, sum(n) FROM gone GROUP BY status HAVING sum(n) <> 0 RETURNING 1)
    SELECT count(*)::int AS n FROM busy`.execute(db);
  const ready = await sql<{ n: number }>`
    WITH busy AS (SELECT group_name, priority FROM ready_tallies GROUP BY group_name, priority HAVING count(*) > 1 OR sum(n) = 0),
    gone AS (
      DELETE FROM ready_tallies t USING busy WHERE t.group_name = busy.group_name AND t.priority = busy.priority
      RETURNING t.group_name, t.priority, t.n
    ),
    kept AS (
      INSERT INTO ready_tallies (group_name, priority, n)
      SELECT group_name, priority, sum(n) FROM gone GROUP BY group_name, priority HAVING sum(n) <> 0 RETURNING 1
    )
    SELECT count(*)::int AS n FROM busy`.execute(db);
  return { status: status.rows[0]?.n ?? 0, ready: ready.rows[0]?.n ?? 0 };
}

/**
 * The tallies against an exact count, in one statement (one snapshot): a violation per status,
 * and one for the groups whose ready count differs. A full scan: for the checker, not for
 * every request.
 */
export async function checkTallies(db: Db): Promise<Violation[]> {
  const { rows } = await sql<{ what: string; key: string; exact: string; kept: string }>`
    WITH exact_status AS (SELECT status AS key, count(*) AS n FROM units GROUP BY status),
    kept_status AS (SELECT status AS key, sum(n) AS n FROM status_tallies GROUP BY status),
    exact_ready AS (SELECT group_name || ' @' || priority AS key, count(*) AS n FROM units WHERE status = 'pending' AND not_before IS NULL GROUP BY group_name, priority),
    kept_ready AS (SELECT group_name || ' @' || priority AS key, sum(n) AS n FROM ready_tallies GROUP BY group_name, priority)
    SELECT 'status' AS what, key, coalesce(e.n, 0) AS exact, coalesce(k.n, 0) AS kept
    FROM exact_status e FULL JOIN kept_status k USING (key) WHERE coalesce(e.n, 0) <> coalesce(k.n, 0)
    UNION ALL
    SELECT 'ready', key, coalesce(e.n, 0), coalesce(k.n, 0)
    FROM exact_ready e FULL JOIN kept_ready k USING (key) WHERE coalesce(e.n, 0) <> coalesce(k.n, 0)`.execute(db);
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
