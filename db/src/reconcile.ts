import { sql } from "kysely";
import type { Db } from "./database.ts";
import type { ClaimedUnit } from "./top-up.ts";
import { applyStatusUpdates, type ApplyOptions, type ApplyResult } from "./apply-status.ts";

/**
 * Units dispatched more than `olderThanMs` ago that never reached `queued`: their outbox
 * message was lost (an unconfirmed publish, a broker that lost it). They keep their attempt;
 * `dispatched_at` is renewed so the same unit is re-published at most once per timeout.
 */
export async function claimStaleDispatched(db: Db, olderThanMs: number, limit: number): Promise<ClaimedUnit[]> {
  const { rows } = await sql<{ id: number; attempt: number; kind: string; payload: unknown }>`
    UPDATE units SET dispatched_at = now(), updated_at = now()
    WHERE id IN (
      SELECT id FROM units
      WHERE status = 'dispatched' AND dispatched_at < now() - make_interval(secs => ${olderThanMs / 1000})
      ORDER BY dispatched_at
      LIMIT ${limit}
      FOR UPDATE SKIP LOCKED
    )
    RETURNING id, attempt, kind, payload`.execute(db);
  return rows.map((r) => ({ unitId: r.id, attempt: r.attempt, kind: r.kind, payload: r.payload }));
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
