import { sql } from "kysely";
import type { Db } from "./database.ts";
import { toClaimedUnit, type ClaimedUnit } from "./top-up.ts";
import { depsResults } from "./deps-results.ts";
import { applyStatusUpdates, type ApplyOptions, type ApplyResult } from "./apply-status.ts";

/**
 * Units dispatched more than `olderThanMs` ago that never reached `queued`: their outbox
 * message was lost (an unconfirmed publish, a broker that lost it). They keep their attempt;
 * `dispatched_at` is renewed so the same unit is re-published at most once per timeout, and
 * the re-publish is counted against the attempt (`republishes`, migration 0006). A unit
 * already re-published `maxRepublishes` times for its attempt is not claimed again: its
 * messages are refused somewhere, and republishedTooOften hands it to the reconciler to end.
 */
export async function claimStaleDispatched(db: Db, olderThanMs: number, limit: number, maxRepublishes = Infinity): Promise<(ClaimedUnit & { republishes: number })[]> {
  const max = Number.isFinite(maxRepublishes) ? maxRepublishes : 2_147_483_647;
  const { rows } = await sql<{ id: number; attempt: number; kind: string; payload: unknown; deps: Record<string, unknown> | null; traceparent: string | null; republishes: number }>`
    UPDATE units SET
      dispatched_at = now(),
      updated_at = now(),
      republishes = CASE WHEN republished_attempt = attempt THEN republishes + 1 ELSE 1 END,
      republished_attempt = attempt
    WHERE id IN (
      SELECT id FROM units
      WHERE status = 'dispatched' AND dispatched_at < now() - make_interval(secs => ${olderThanMs / 1000})
        AND NOT (republished_attempt IS NOT DISTINCT FROM attempt AND republishes >= ${max})
      ORDER BY dispatched_at
      LIMIT ${limit}
      FOR UPDATE SKIP LOCKED
    )
    RETURNING id, attempt, kind, payload, ${depsResults("units")} AS deps, traceparent, republishes`.execute(db);
  return rows.map((r) => ({ ...toClaimedUnit(r), republishes: r.republishes }));
}

/**
 * Units still `dispatched` past `olderThanMs` after `maxRepublishes` re-publishes of their
 * attempt: re-publishing did not help, so doing it again forever would not either.
 */
export async function republishedTooOften(db: Db, olderThanMs: number, maxRepublishes: number, limit: number): Promise<{ unitId: number; attempt: number }[]> {
  const { rows } = await sql<{ id: number; attempt: number }>`
    SELECT id, attempt FROM units
    WHERE status = 'dispatched' AND dispatched_at < now() - make_interval(secs => ${olderThanMs / 1000})
      AND republished_attempt = attempt AND republishes >= ${maxRepublishes}
    ORDER BY id
    LIMIT ${limit}`.execute(db);
  return rows.map((r) => ({ unitId: r.id, attempt: r.attempt }));
}

/**
 * Units in `processing` for longer than `timeoutMs` (an agent that hangs but keeps its
 * connection): that attempt is recorded as a retryable error by the reconciler, through the
 * same rules as any report, so a late success for the old attempt changes nothing.
 */
export async function expireProcessing(db: Db, timeoutMs: number, opts: ApplyOptions): Promise<ApplyResult> {
  const { rows } = await sql<{ id: number; attempt: number }>`
    SELECT id, attempt FROM units
    WHERE status = 'processing' AND updated_at < now() - make_interval(secs => ${timeoutMs / 1000})
    LIMIT 1000`.execute(db);
  const now = new Date();
  return applyStatusUpdates(
    db,
    rows.map((r) => ({
      unitId: r.id,
      attempt: r.attempt,
      status: "error" as const,
      at: now,
      source: "reconciler",
      error: { message: `no result after ${timeoutMs} ms in processing (RTB_PROCESSING_TIMEOUT_MS)`, retryable: true },
    })),
    opts,
  );
}

/** Units `queued` (routed to a job queue) for longer than `olderThanMs`, oldest first. */
export async function staleQueued(db: Db, olderThanMs: number, limit: number): Promise<{ unitId: number; attempt: number; kind: string }[]> {
  const { rows } = await sql<{ id: number; attempt: number; kind: string }>`
    SELECT id, attempt, kind FROM units
    WHERE status = 'queued' AND updated_at < now() - make_interval(secs => ${olderThanMs / 1000})
    ORDER BY updated_at
    LIMIT ${limit}`.execute(db);
  return rows.map((r) => ({ unitId: r.id, attempt: r.attempt, kind: r.kind }));
}
