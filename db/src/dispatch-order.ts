import { sql } from "kysely";
import type { Db } from "./database.ts";

/**
 * THE dispatch order, defined once: both the top-up and GET /next read it, so the preview is
 * exactly what the next top-up takes. Eligible = pending and past any retry backoff. Order:
 * higher priority first; within a priority, round-robin across groups (every group's first
 * unit, then every group's second, ...), so one large group cannot starve the others; within
 * a group, first in first out (by id).
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
  const { rows } = await sql<{ id: number; kind: string; group_name: string; priority: number; attempt: number; created_at: Date }>`
    SELECT id, kind, group_name, priority, attempt, created_at
    FROM (
      SELECT id, kind, group_name, priority, attempt, created_at,
             row_number() OVER (PARTITION BY priority, group_name ORDER BY id) AS turn
      FROM units
      WHERE status = 'pending' AND (not_before IS NULL OR not_before <= now())
    ) AS backlog
    ORDER BY priority DESC, turn, id
    LIMIT ${limit}`.execute(db);
  return rows.map((r) => ({
    id: r.id,
    kind: r.kind,
    group: r.group_name,
    priority: r.priority,
    attempt: r.attempt,
    createdAt: r.created_at,
  }));
}
