import { sql } from "kysely";
import type { Db } from "./database.ts";
import { OUTCOMES, type UnitStatus } from "@rtb/protocol";
import { statusList } from "./status-sql.ts";

/** Finished attempts (`success` and `error` events) per time bucket. */
export interface Throughput {
  /** The database's clock when the window was read; the last bucket holds it. */
  now: Date;
  bucketMs: number;
  /** Oldest first; a bucket with no finished attempt is there with zeros. */
  buckets: { at: Date; success: number; error: number }[];
  /**
   * Where the counts start: the window's start, or later when the window held more than
   * `maxEvents` events (the buckets before it are then undercounted).
   */
  coveredFrom: Date;
  /** Pass it back as `afterId` on the next call: events up to it have left the window. */
  nextAfterId: number;
}

/**
 * Terminal events per bucket over the last `windowMs`, from the timeline.
 *
 * Called once a second while a dashboard is open, on a table that only grows, so the scan is
 * bounded by id, through the primary key: ids grow with recorded_at (both are taken as the
 * row is inserted), so the window is the table's tail. At most the newest `maxEvents` rows
 * are read (`coveredFrom` says how far back that reached); and a caller that polls passes
 * the previous call's `nextAfterId`, so a tick reads only the rows still in the window. (Not the
 * BRIN index on recorded_at: until its newest ranges are summarised by a vacuum, a BRIN scan
 * reads every unsummarised page, which on an insert-only table can be most of it.)
 */
export async function terminalThroughput(
  db: Db,
  opts: { windowMs: number; bucketMs: number; maxEvents?: number; afterId?: number },
): Promise<Throughput> {
  const { windowMs, bucketMs, maxEvents = 100_000 } = opts;
  // A constant, not a subquery, so the planner knows how few rows the id range holds.
  const top = await sql<{ max: number | null }>`SELECT max(id) AS max FROM unit_events`.execute(db);
  const maxId = top.rows[0]?.max ?? 0;
  const lowId = Math.max(opts.afterId ?? 0, maxId - maxEvents);
  const { rows } = await sql<{ now: Date; first_id: number | null; oldest: Date | null; bucket: number | null; success: number; error: number }>`
    WITH recent AS (
      SELECT id, status, recorded_at FROM unit_events
      WHERE id > ${lowId}::bigint AND recorded_at >= now() - make_interval(secs => ${windowMs / 1000})
    ), first AS (
      SELECT id, recorded_at FROM recent ORDER BY id LIMIT 1
    ), counted AS (
      SELECT floor(extract(epoch FROM recorded_at) * 1000 / ${bucketMs})::bigint AS bucket,
             count(*) FILTER (WHERE status = 'success')::int AS success,
             count(*) FILTER (WHERE status = 'error')::int AS error
      FROM recent WHERE status IN ${statusList(OUTCOMES)} GROUP BY 1
    )
    SELECT now() AS now, (SELECT id FROM first) AS first_id, (SELECT recorded_at FROM first) AS oldest,
           c.bucket, coalesce(c.success, 0) AS success, coalesce(c.error, 0) AS error
    FROM (SELECT 1) one LEFT JOIN counted c ON true`.execute(db);
  const head = rows[0];
  if (!head) throw new Error("throughput query returned no row");
  const now = head.now;
  const last = Math.floor(now.getTime() / bucketMs);
  const n = Math.max(1, Math.ceil(windowMs / bucketMs));
  const counts = new Map(rows.filter((r) => r.bucket !== null).map((r) => [Number(r.bucket), r]));
  const buckets = Array.from({ length: n }, (_, i) => {
    const b = last - n + 1 + i;
    const c = counts.get(b);
    return { at: new Date(b * bucketMs), success: c?.success ?? 0, error: c?.error ?? 0 };
  });
  const windowStart = new Date(now.getTime() - windowMs);
  // Undercounted only when the cap cut the scan short of rows that are still in the window.
  const cut = lowId === maxId - maxEvents && lowId > 0 && head.oldest !== null && head.oldest.getTime() - windowStart.getTime() > bucketMs;
  return {
    now,
    bucketMs,
    buckets,
    coveredFrom: cut && head.oldest ? head.oldest : windowStart,
    // Nothing in the window: the next events come after the newest one, give or take the
    // transactions in progress now (their ids were taken earlier, they commit later).
    nextAfterId: head.first_id !== null ? head.first_id - 1 : Math.max(0, maxId - 10_000),
  };
}

export interface ActiveUnit {
  id: number;
  kind: string;
  group: string;
  status: UnitStatus;
  attempt: number;
  maxAttempts: number;
  /** The unit's latest timeline event. */
  lastEvent: { status: string; at: Date; source: string };
}

/**
 * The `limit` units with the most recent timeline events, most recent first. Reads the
 * newest `limit * 20` events through the primary key (a unit has at most 4 per attempt), so
 * the cost does not grow with the table.
 */
export async function recentlyActiveUnits(db: Db, limit: number): Promise<ActiveUnit[]> {
  const { rows } = await sql<{
    id: number;
    kind: string;
    group_name: string;
    status: UnitStatus;
    attempt: number;
    max_attempts: number;
    event_status: string;
    event_at: Date;
    event_source: string;
  }>`
    WITH newest AS (
      SELECT id, unit_id, status, at, source FROM unit_events ORDER BY id DESC LIMIT ${limit * 20}
    ), latest AS (
      SELECT DISTINCT ON (unit_id) unit_id, id, status, at, source FROM newest ORDER BY unit_id, id DESC
    ), picked AS (
      SELECT * FROM latest ORDER BY id DESC LIMIT ${limit}
    )
    SELECT u.id, u.kind, u.group_name, u.status, u.attempt, u.max_attempts,
           p.status AS event_status, p.at AS event_at, p.source AS event_source
    FROM picked p JOIN units u ON u.id = p.unit_id
    ORDER BY p.id DESC`.execute(db);
  return rows.map((r) => ({
    id: r.id,
    kind: r.kind,
    group: r.group_name,
    status: r.status,
    attempt: r.attempt,
    maxAttempts: r.max_attempts,
    lastEvent: { status: r.event_status, at: r.event_at, source: r.event_source },
  }));
}
