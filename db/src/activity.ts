import { sql } from "kysely";
import type { Db } from "./database.ts";
import type { UnitStatus } from "./schema.ts";

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
}

/**
 * Terminal events per bucket over the last `windowMs`, from the timeline.
 *
 * unit_events has no index on recorded_at, and a filter on it alone would read the whole
 * table once a second. Ids grow with recorded_at (both are taken as the row is inserted), so
 * the scan is bounded by id instead: only the newest `maxEvents` rows are read, through the
 * primary key, and `coveredFrom` says how far back that reached.
 */
export async function terminalThroughput(
  db: Db,
  opts: { windowMs: number; bucketMs: number; maxEvents?: number },
): Promise<Throughput> {
  const { windowMs, bucketMs, maxEvents = 100_000 } = opts;
  const { rows } = await sql<{ now: Date; low_id: number; oldest: Date | null; bucket: number | null; success: number; error: number }>`
    WITH bounds AS (
      SELECT now() AS now, coalesce(max(id), 0) - ${maxEvents}::bigint AS low_id FROM unit_events
    ), recent AS (
      SELECT e.status, e.recorded_at FROM unit_events e, bounds b
      WHERE e.id > b.low_id AND e.recorded_at >= b.now - make_interval(secs => ${windowMs / 1000})
    ), counted AS (
      SELECT floor(extract(epoch FROM recorded_at) * 1000 / ${bucketMs})::bigint AS bucket,
             count(*) FILTER (WHERE status = 'success')::int AS success,
             count(*) FILTER (WHERE status = 'error')::int AS error
      FROM recent WHERE status IN ('success', 'error') GROUP BY 1
    )
    SELECT b.now, b.low_id,
           (SELECT recorded_at FROM unit_events WHERE id > b.low_id ORDER BY id LIMIT 1) AS oldest,
           c.bucket, coalesce(c.success, 0) AS success, coalesce(c.error, 0) AS error
    FROM bounds b LEFT JOIN counted c ON true`.execute(db);
  const first = rows[0];
  if (!first) throw new Error("throughput query returned no row");
  const now = first.now;
  const last = Math.floor(now.getTime() / bucketMs);
  const n = Math.max(1, Math.ceil(windowMs / bucketMs));
  const counts = new Map(rows.filter((r) => r.bucket !== null).map((r) => [Number(r.bucket), r]));
  const buckets = Array.from({ length: n }, (_, i) => {
    const b = last - n + 1 + i;
    const c = counts.get(b);
    return { at: new Date(b * bucketMs), success: c?.success ?? 0, error: c?.error ?? 0 };
  });
  const windowStart = new Date(now.getTime() - windowMs);
  // Truncated only when rows older than the bound exist and the oldest row read is inside the window.
  const truncated = first.low_id > 0 && first.oldest !== null && first.oldest > windowStart;
  return { now, bucketMs, buckets, coveredFrom: truncated && first.oldest ? first.oldest : windowStart };
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
