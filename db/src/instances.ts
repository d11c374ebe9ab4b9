import { sql } from "kysely";
import type { Db } from "./database.ts";
import type { ServiceInstancesTable } from "./schema.ts";

export interface ServiceInstance {
  service: ServiceInstancesTable["service"];
  id: string;
  startedAt: Date;
  lastSeen: Date;
  deadLettered: number;
}

/**
 * Bounds on what a heartbeat may claim (issue 12): its numbers come from the network, and a
 * total once stored only grows (GREATEST), so one bogus heartbeat would poison it for good.
 * - A lifetime may not start later than the api's clock plus CLOCK_SKEW_MS.
 * - `deadLettered` is a safe integer of at most DEAD_LETTERED_MAX, and at most
 *   DEAD_LETTERED_SLACK + DEAD_LETTERED_PER_SECOND per second since the lifetime started:
 *   more than a process can have dead-lettered (each is a broker round trip).
 */
export const CLOCK_SKEW_MS = 5 * 60_000;
export const DEAD_LETTERED_MAX = 1_000_000_000;
export const DEAD_LETTERED_SLACK = 10_000;
export const DEAD_LETTERED_PER_SECOND = 10_000;

/** Rows kept: instances not seen for RETAIN_MS are pruned, and beyond MAX_INSTANCES the least recently seen. */
export const INSTANCES_RETAIN_MS = 6 * 3_600_000;
export const MAX_INSTANCES = 1_000;
/** GET / lists at most this many instances per service (the most recently seen). */
export const LISTED_PER_SERVICE = 50;

/**
 * What of a heartbeat's claims is refused at `now`, or null when all are plausible: a lifetime
 * that starts in the future is not recorded at all; an implausible counter is not stored (the
 * instance is still seen, its total keeps its last plausible value).
 */
export function implausibleHeartbeat(h: { startedAt: Date; deadLettered: number }, now: Date): { field: "startedAt" | "deadLettered"; reason: string } | null {
  if (!Number.isFinite(h.startedAt.getTime())) return { field: "startedAt", reason: "startedAt is not a time" };
  if (h.startedAt.getTime() > now.getTime() + CLOCK_SKEW_MS) {
    return { field: "startedAt", reason: `startedAt ${h.startedAt.toISOString()} is later than the api's clock (${now.toISOString()})` };
  }
  const d = h.deadLettered;
  if (!Number.isSafeInteger(d) || d < 0 || d > DEAD_LETTERED_MAX) return { field: "deadLettered", reason: `deadLettered ${d} is not an integer in 0..${DEAD_LETTERED_MAX}` };
  const lifetimeS = Math.max(0, (now.getTime() - h.startedAt.getTime()) / 1000);
  if (d > DEAD_LETTERED_SLACK + DEAD_LETTERED_PER_SECOND * lifetimeS) {
    return { field: "deadLettered", reason: `deadLettered ${d} after ${Math.round(lifetimeS)} s of lifetime` };
  }
  return null;
}

/** Instances (leaders, agents, api replicas) seen in the last `withinMs`: per service the most recently seen, at most `perService`. */
export async function recentInstances(db: Db, withinMs: number, perService = LISTED_PER_SERVICE): Promise<ServiceInstance[]> {
  const { rows } = await sql<{ service: ServiceInstance["service"]; id: string; started_at: Date; last_seen: Date; dead_lettered: number }>`
    SELECT service, id, started_at, last_seen, dead_lettered FROM (
      SELECT *, row_number() OVER (PARTITION BY service ORDER BY last_seen DESC) AS rank
      FROM service_instances
      WHERE last_seen > now() - make_interval(secs => ${withinMs / 1000})
    ) r
    WHERE rank <= ${perService}
    ORDER BY service, id, started_at DESC`.execute(db);
  return rows.map((r) => ({ service: r.service, id: r.id, startedAt: r.started_at, lastSeen: r.last_seen, deadLettered: Number(r.dead_lettered) }));
}

/** Messages dead-lettered per service, over every instance that ever reported (pruned ones included). */
export async function deadLetteredByService(db: Db): Promise<Record<ServiceInstancesTable["service"], number>> {
  const { rows } = await sql<{ service: ServiceInstancesTable["service"]; n: string }>`
    SELECT service, sum(n)::text AS n FROM (
      SELECT service, dead_lettered AS n FROM service_instances
      UNION ALL SELECT service, dead_lettered FROM service_retired
    ) t GROUP BY service`.execute(db);
  const totals = { api: 0, leader: 0, agent: 0 };
  for (const r of rows) totals[r.service] = Number(r.n);
  return totals;
}

/**
 * Delete the instances not seen for `retainMs`, and beyond the `keep` most recently seen,
 * folding their dead-letter totals into service_retired in the same statement, so the totals
 * per service never change. Concurrent prunes by two api replicas delete each row once (the
 * second waits for the first's row locks, then finds the rows gone).
 */
export async function pruneInstances(db: Db, opts: { retainMs?: number; keep?: number } = {}): Promise<number> {
  const retainS = (opts.retainMs ?? INSTANCES_RETAIN_MS) / 1000;
  const keep = opts.keep ?? MAX_INSTANCES;
  const { rows } = await sql<{ n: number }>`
    WITH gone AS (
      DELETE FROM service_instances s
      USING (
        SELECT service, id, started_at, last_seen, row_number() OVER (ORDER BY last_seen DESC) AS rank FROM service_instances
      ) r
      WHERE s.service = r.service AND s.id = r.id AND s.started_at = r.started_at
        AND (r.last_seen < now() - make_interval(secs => ${retainS}) OR r.rank > ${keep})
      RETURNING s.service, s.dead_lettered
    ),
    folded AS (
      INSERT INTO service_retired AS t (service, instances, dead_lettered)
      SELECT service, count(*), sum(dead_lettered) FROM gone GROUP BY service
      ON CONFLICT (service) DO UPDATE SET
        instances = t.instances + EXCLUDED.instances,
        dead_lettered = t.dead_lettered + EXCLUDED.dead_lettered
      RETURNING 1
    )
    SELECT count(*)::int AS n FROM gone`.execute(db);
  return rows[0]?.n ?? 0;
}
