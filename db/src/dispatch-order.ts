import { CompiledQuery, sql } from "kysely";
import type { Db } from "./database.ts";

/**
 * THE dispatch order, defined once: both the top-up and GET /next read it, so the preview is
 * exactly what the next top-up takes. Eligible = pending and past any retry backoff. Order:
 *
 * 1. higher priority first;
 * 2. the unit's turn within its group (its group's 1st eligible unit has turn 1, the 2nd
 *    turn 2, ...): every group gets one unit per round, so a large group cannot starve a
 *    small one;
 * 3. within a round, the group served least recently first (unit_groups.last_served; never
 *    served comes first). This is the round-robin's memory: in the steady state every top-up
 *    takes one unit, and without it the oldest group would win every time;
 * 4. within a group, first in first out (by id).
 */
export interface BacklogEntry {
  id: number;
  kind: string;
  group: string;
  priority: number;
  attempt: number;
  createdAt: Date;
}

export async function nextInLine(db: Db, limit: number): Promise<BacklogEntry[]> {
  const { rows } = await nextInLineQuery(limit).execute(db);
  return rows.map((r) => ({
    id: r.id,
    kind: r.kind,
    group: r.group_name,
    priority: r.priority,
    attempt: r.attempt,
    createdAt: r.created_at,
  }));
}

/** The plan PostgreSQL runs for nextInLine (EXPLAIN ANALYZE), line by line: for the benchmark. */
export async function explainNextInLine(db: Db, limit: number): Promise<string[]> {
  const q = nextInLineQuery(limit).compile(db);
  const { rows } = await db.executeQuery<{ "QUERY PLAN": string }>(CompiledQuery.raw(`EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) ${q.sql}`, [...q.parameters]));
  return rows.map((r) => r["QUERY PLAN"]);
}

function nextInLineQuery(limit: number) {
  return sql<{ id: number; kind: string; group_name: string; priority: number; attempt: number; created_at: Date }>`
    SELECT b.id, b.kind, b.group_name, b.priority, b.attempt, b.created_at
    FROM (
      SELECT id, kind, group_name, priority, attempt, created_at,
             row_number() OVER (PARTITION BY priority, group_name ORDER BY id) AS turn
      FROM units
      WHERE status = 'pending' AND (not_before IS NULL OR not_before <= now())
    ) AS b
    LEFT JOIN unit_groups AS g ON g.name = b.group_name
    ORDER BY b.priority DESC, b.turn, g.last_served ASC NULLS FIRST, b.id
    LIMIT ${limit}`;
}

/**
 * Record that these groups were just served, in this order (a group listed twice counts at
 * its last place). Runs inside the top-up's transaction, under its advisory lock, so the
 * counter in `control` needs no other protection.
 */
export async function markGroupsServed(db: Db, groupsInOrder: readonly string[]): Promise<void> {
  const lastPlace = new Map<string, number>();
  groupsInOrder.forEach((g, i) => lastPlace.set(g, i + 1));
  if (lastPlace.size === 0) return;
  const { rows } = await sql<{ base: number }>`
    UPDATE control SET served_seq = served_seq + ${groupsInOrder.length} RETURNING served_seq - ${groupsInOrder.length} AS base`.execute(db);
  const base = rows[0]!.base;
  const entries = [...lastPlace];
  await sql`
    INSERT INTO unit_groups (name, last_served)
    SELECT * FROM unnest(${sql.val(entries.map(([g]) => g))}::text[], ${sql.val(entries.map(([, place]) => base + place))}::bigint[])
    ON CONFLICT (name) DO UPDATE SET last_served = EXCLUDED.last_served`.execute(db);
}
