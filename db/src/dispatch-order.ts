import { CompiledQuery, sql } from "kysely";
import type { Db } from "./database.ts";
import { planDispatch, type GroupShare, type Pick, type ReadyGroup } from "./fair-share.ts";

/**
 * The next units in dispatch order: what GET /next shows and what the top-up claims. The
 * order itself is fair-share.ts; this reads its inputs and then the chosen units, in two
 * statements whose cost depends on the number of groups and on k, never on the backlog:
 *
 * 1. per group with ready units: how many at each priority (ready_tallies, kept by
 *    triggers), its weight, limit and last service (unit_groups) and its units in flight
 *    (the units_in_flight_by_group index: at most the outbox plus the agents' slots);
 * 2. the first units of each chosen group and priority (the units_ready index).
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
  await releaseDueRetries(db);
  return unitsFor(db, await planNext(db, limit));
}

/**
 * The picks for the next `limit` units. The inputs are read only for the priorities that can
 * matter (those with fewer than `limit` ready units above them); when groups at their
 * max_in_flight leave picks unfilled, the lower priorities are read too.
 */
async function planNext(db: Db, limit: number): Promise<Pick[]> {
  const [ready, shares, partial] = await dispatchInputs(db, limit);
  const picks = planDispatch(ready, shares, limit);
  if (picks.length >= limit || !partial) return picks;
  const [allReady, allShares] = await dispatchInputs(db, Infinity);
  return planDispatch(allReady, allShares, limit);
}

/**
 * Retries whose backoff has ended become ready (not_before cleared), so that the tallies
 * count them. The top-up and GET /next both do this first, so they see the same backlog.
 */
export async function releaseDueRetries(db: Db): Promise<number> {
  const { numAffectedRows } = await sql`
    UPDATE units SET not_before = NULL WHERE status = 'pending' AND not_before <= now()`.execute(db);
  return Number(numAffectedRows ?? 0);
}

/**
 * The ready groups and their shares, for the priorities that have fewer than `limit` ready
 * units above them. `partial`: some lower priority was left out.
 */
export async function dispatchInputs(db: Db, limit: number): Promise<[ReadyGroup[], Map<string, GroupShare>, boolean]> {
  const { rows } = await dispatchInputsQuery(limit).execute(db);
  const ready: ReadyGroup[] = [];
  const shares = new Map<string, GroupShare>();
  let partial = false;
  for (const r of rows) {
    if (r.group_name === null) {
      partial = true;
      continue;
    }
    ready.push({ group: r.group_name, priority: r.priority, ready: Number(r.ready) });
    shares.set(r.group_name, {
      weight: r.weight ?? 1,
      maxInFlight: r.max_in_flight,
      inFlight: Number(r.in_flight),
      lastServed: r.last_served === null ? null : Number(r.last_served),
    });
  }
  return [ready, shares, partial];
}

function dispatchInputsQuery(limit: number) {
  const bound = Number.isFinite(limit) ? limit : null;
  return sql<{
    group_name: string | null;
    priority: number;
    ready: string;
    in_flight: string;
    weight: number | null;
    max_in_flight: number | null;
    last_served: string | null;
  }>`
    WITH every AS (
      SELECT group_name, priority, sum(n) AS ready FROM ready_tallies GROUP BY group_name, priority HAVING sum(n) > 0
    ),
    levels AS (
      SELECT priority, sum(sum(ready)) OVER (ORDER BY priority DESC) - sum(ready) AS above FROM every GROUP BY priority
    ),
    r AS (
      SELECT every.* FROM every JOIN levels USING (priority) WHERE ${bound}::bigint IS NULL OR levels.above < ${bound}
    ),
    f AS (
      SELECT group_name, count(*) AS in_flight FROM units
      WHERE status IN ('dispatched', 'queued', 'processing')
      GROUP BY group_name
    )
    SELECT r.group_name, r.priority, r.ready, coalesce(f.in_flight, 0) AS in_flight, g.weight, g.max_in_flight, g.last_served
    FROM r LEFT JOIN f USING (group_name) LEFT JOIN unit_groups g ON g.name = r.group_name
    UNION ALL
    -- One row of nulls when a priority was left out.
    SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL WHERE EXISTS (SELECT 1 FROM levels WHERE NOT (${bound}::bigint IS NULL OR above < ${bound}))`;
}

/** The units the picks stand for, in pick order: the j-th pick of a group is its j-th ready unit. */
export async function unitsFor(db: Db, picks: readonly Pick[]): Promise<BacklogEntry[]> {
  if (picks.length === 0) return [];
  const { rows } = await unitsForQuery(picks).execute(db);
  const queues = new Map<string, BacklogEntry[]>();
  for (const r of rows) {
    const key = `${r.priority}\u0000${r.group_name}`;
    const q = queues.get(key) ?? [];
    q.push({ id: Number(r.id), kind: r.kind, group: r.group_name, priority: r.priority, attempt: r.attempt, createdAt: r.created_at });
    queues.set(key, q);
  }
  const out: BacklogEntry[] = [];
  for (const p of picks) {
    // A unit cancelled or dispatched since the tallies were read: the pick goes unfilled.
    const next = queues.get(`${p.priority}\u0000${p.group}`)?.shift();
    if (next) out.push(next);
  }
  return out;
}

function unitsForQuery(picks: readonly Pick[]) {
  const wanted = new Map<string, { group: string; priority: number; count: number }>();
  for (const p of picks) {
    const key = `${p.priority}\u0000${p.group}`;
    const w = wanted.get(key) ?? { group: p.group, priority: p.priority, count: 0 };
    w.count++;
    wanted.set(key, w);
  }
  const list = [...wanted.values()];
  return sql<{ id: string; kind: string; group_name: string; priority: number; attempt: number; created_at: Date }>`
    SELECT u.id, u.kind, u.group_name, u.priority, u.attempt, u.created_at
    FROM unnest(${sql.val(list.map((w) => w.group))}::text[], ${sql.val(list.map((w) => w.priority))}::int[], ${sql.val(list.map((w) => w.count))}::int[])
      AS w (group_name, priority, n)
    CROSS JOIN LATERAL (
      SELECT id, kind, group_name, priority, attempt, created_at FROM units
      WHERE status = 'pending' AND not_before IS NULL AND group_name = w.group_name AND priority = w.priority
      ORDER BY id LIMIT w.n
    ) AS u
    ORDER BY u.id`;
}

/** The plans PostgreSQL runs for a preview of `limit` (EXPLAIN ANALYZE), line by line: for the benchmark. */
export async function explainNextInLine(db: Db, limit: number): Promise<string[]> {
  const [ready, shares] = await dispatchInputs(db, limit);
  const picks = planDispatch(ready, shares, limit);
  const lines: string[] = [];
  for (const [title, query] of [
    ["1. the inputs: ready groups, their shares and units in flight", dispatchInputsQuery(limit)],
    ["2. the chosen units", unitsForQuery(picks)],
  ] as const) {
    const q = query.compile(db);
    const { rows } = await db.executeQuery<{ "QUERY PLAN": string }>(CompiledQuery.raw(`EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) ${q.sql}`, [...q.parameters]));
    lines.push(title, ...rows.map((r) => `  ${r["QUERY PLAN"]}`));
  }
  return lines;
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
  const base = Number(rows[0]!.base);
  const entries = [...lastPlace];
  await sql`
    INSERT INTO unit_groups (name, last_served)
    SELECT * FROM unnest(${sql.val(entries.map(([g]) => g))}::text[], ${sql.val(entries.map(([, place]) => base + place))}::bigint[])
    ON CONFLICT (name) DO UPDATE SET last_served = EXCLUDED.last_served`.execute(db);
}
