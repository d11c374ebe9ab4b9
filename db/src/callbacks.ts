import { sql } from "kysely";
import type { Db } from "./database.ts";

/**
 * Completion callbacks (migrations 0013, 0014, 0015): the rows the trigger `units_callback_update` writes when
 * a unit ends, claimed and settled by the api's delivery loop
 * (services/api/src/callback-deliverer.ts).
 */

/** A delivery claimed for one attempt. */
export interface ClaimedCallback {
  id: number;
  /** Its `webhook-id` header. */
  webhookId: string;
  unitId: number;
  url: string;
  body: unknown;
  /** This attempt's number, from 1. */
  attempt: number;
  /** When the unit ended (the row was written). */
  createdAt: Date;
  /** The URL's authority, lower-cased (migration 0015): what the per-host cap counts. */
  host: string;
}

/** One attempt as the unit's timeline shows it. */
export interface CallbackAttempt {
  at: Date;
  outcome: "delivered" | "failed" | "given_up";
  statusCode?: number;
  error?: string;
}

export interface CallbackDelivery {
  /** The `webhook-id` header of every attempt of this delivery. */
  webhookId: string;
  url: string;
  state: "pending" | "delivered" | "given_up";
  attempts: number;
  /** Pending: the next attempt is not before then. */
  nextAttemptAt: Date | null;
  createdAt: Date;
  finishedAt: Date | null;
  history: CallbackAttempt[];
}

/**
 * A delivery's `webhook-id`, from its random `webhook_id` (migration 0014): stable across its
 * retries, distinct for each end of a unit (a retried unit ends again), and unique across
 * installations and restored databases (receivers deduplicate on it). 32 hex digits.
 */
export const webhookId = (uuid: string) => `msg_${uuid.replaceAll("-", "")}`;

/** Hosts one claim may take rows from, per request slot it fills: room for apis claiming at once. */
const CLAIM_SPREAD = 4;

/** Hosts with pending deliveries one claim looks at, at most; past them, the next claim goes on from the last. */
export const HOSTS_PER_CLAIM = 1_000;

/** Where the next claim starts among the hosts (by name), and what it may send to each. */
export interface ClaimCap {
  /** Open requests to one host at most (RTB_WEBHOOK_HOST_CONCURRENCY). */
  perHost: number;
  /** This claimer's open requests, by host (ClaimedCallback.host). */
  inFlight: ReadonlyMap<string, number>;
  /** The last host the previous claim looked at, when it stopped at HOSTS_PER_CLAIM; else null. */
  after: string | null;
  /** Hosts looked at per claim (default HOSTS_PER_CLAIM). */
  hosts?: number;
}

/**
 * Claim up to `limit` due deliveries: each gets its attempt counted and its `next_at` moved
 * `leaseMs` ahead, so no other api (or loop) claims it while it is being sent. FOR UPDATE SKIP
 * LOCKED: api replicas claiming at once take different rows, without a duty. An api that dies
 * mid-request leaves the row pending; once the lease ends another api (or this one restarted)
 * claims it again: at-least-once, with the same webhook-id.
 *
 * Per host (migration 0015), at most `cap.perHost` less the requests open to it: one slow
 * receiver with many deliveries due cannot take every request slot from the others. The hosts
 * with pending deliveries are listed by a skip scan of `callbacks_pending_by_host` (up to
 * HOSTS_PER_CLAIM, from `cap.after`); of those with room, the ones whose oldest due row is
 * oldest (CLAIM_SPREAD × `limit` of them, read without locks) are claimed from in turn, each
 * by one statement that locks only the rows it claims, skipping rows another claimer holds, so
 * apis claiming at once each fill up from the hosts the others left. A host at its cap is
 * never read.
 */
export async function claimCallbacks(db: Db, limit: number, leaseMs: number, cap: ClaimCap = { perHost: limit, inFlight: new Map(), after: null }): Promise<{ claimed: ClaimedCallback[]; after: string | null }> {
  if (limit <= 0) return { claimed: [], after: cap.after };
  const from = cap.after === null ? sql`host >= ''` : sql`host > ${cap.after}`;
  const hostsPerClaim = cap.hosts ?? HOSTS_PER_CLAIM;
  const { rows: listed } = await sql<{ host: string }>`
    WITH RECURSIVE hosts(host) AS (
      (SELECT host FROM callbacks WHERE state = 'pending' AND ${from} ORDER BY host LIMIT 1)
      UNION ALL
      SELECT (SELECT c.host FROM callbacks c WHERE c.state = 'pending' AND c.host > h.host ORDER BY c.host LIMIT 1)
      FROM hosts h WHERE h.host IS NOT NULL)
    SELECT host FROM hosts WHERE host IS NOT NULL LIMIT ${hostsPerClaim}`.execute(db);
  const after = listed.length === hostsPerClaim ? listed.at(-1)!.host : null;
  const room = new Map(listed.map((r) => [r.host, Math.min(limit, cap.perHost - (cap.inFlight.get(r.host) ?? 0))] as const).filter(([, n]) => n > 0));
  if (room.size === 0) return { claimed: [], after };
  // The hosts with room whose oldest due row is oldest (read without locks), then each one's
  // rows claimed by a statement of its own that locks only what it claims.
  const { rows: heads } = await sql<{ host: string }>`
    SELECT r.host FROM unnest(${[...room.keys()]}::text[]) AS r(host)
    CROSS JOIN LATERAL (
      SELECT next_at FROM callbacks WHERE host = r.host AND state = 'pending' AND next_at <= now()
      ORDER BY next_at LIMIT 1) h
    ORDER BY h.next_at LIMIT ${limit * CLAIM_SPREAD}`.execute(db);
  const claimed: ClaimedCallback[] = [];
  for (const { host } of heads) {
    const n = Math.min(limit - claimed.length, room.get(host)!);
    if (n <= 0) break;
    // Rows claimed by the statements before are the caller's to send: a failure now ends the
    // claim with them (it is thrown only when nothing was claimed), not with their leases lost.
    const result = await sql<{ id: string; webhook_id: string; unit_id: string; url: string; body: unknown; attempts: number; created_at: Date; host: string }>`
      UPDATE callbacks SET attempts = attempts + 1, next_at = now() + make_interval(secs => ${leaseMs / 1000})
      WHERE id = ANY(ARRAY(
        SELECT id FROM callbacks WHERE host = ${host} AND state = 'pending' AND next_at <= now()
        ORDER BY next_at LIMIT ${n}
        FOR UPDATE SKIP LOCKED))
      RETURNING id, webhook_id, unit_id, url, body, attempts, created_at, host`
      .execute(db)
      .catch((err: unknown) => {
        if (claimed.length === 0) throw err;
        return null;
      });
    if (result === null) break;
    for (const r of result.rows) claimed.push({ id: Number(r.id), webhookId: webhookId(r.webhook_id), unitId: Number(r.unit_id), url: r.url, body: r.body, attempt: r.attempts, createdAt: r.created_at, host: r.host });
  }
  return { claimed, after };
}

/**
 * The receiver answered 2xx: delivered (whoever's claim it was). False: it was no longer
 * pending (a claimer whose lease lapsed, after another delivered it or gave it up), so this
 * answer delivered nothing new and is not counted.
 */
export async function markDelivered(db: Db, c: ClaimedCallback, statusCode: number): Promise<boolean> {
  const { rows } = await sql<{ id: string }>`
    UPDATE callbacks SET state = 'delivered', finished_at = now(),
      history = history || jsonb_build_array(jsonb_build_object('at', now(), 'outcome', 'delivered', 'statusCode', ${statusCode}::int))
    WHERE id = ${c.id} AND state = 'pending'
    RETURNING id`.execute(db);
  return rows.length > 0;
}

/**
 * An attempt failed: try again after `retryInMs`, or give up when this was the last one. Only
 * for the claim that made the attempt (`attempts` unchanged since): a sender whose lease ran out
 * and whose row was claimed again leaves the newer claim's schedule alone.
 */
export async function markFailed(db: Db, c: ClaimedCallback, failure: { statusCode?: number; error: string }, opts: { retryInMs: number; giveUp: boolean }): Promise<boolean> {
  const entry = {
    outcome: opts.giveUp ? "given_up" : "failed",
    ...(failure.statusCode !== undefined ? { statusCode: failure.statusCode } : {}),
    error: failure.error,
  };
  const { rows } = await sql<{ id: string }>`
    UPDATE callbacks SET
      state = ${opts.giveUp ? "given_up" : "pending"},
      finished_at = ${opts.giveUp ? sql`now()` : sql`NULL`},
      next_at = now() + make_interval(secs => ${opts.retryInMs / 1000}),
      history = history || jsonb_build_array(${JSON.stringify(entry)}::jsonb || jsonb_build_object('at', now()))
    WHERE id = ${c.id} AND state = 'pending' AND attempts = ${c.attempt}
    RETURNING id`.execute(db);
  return rows.length > 0;
}

/** A unit's deliveries, oldest first (GET /units/:id). */
export async function unitCallbacks(db: Db, unitId: number): Promise<CallbackDelivery[]> {
  const rows = await db.selectFrom("callbacks").selectAll().where("unit_id", "=", unitId).orderBy("id").execute();
  return rows.map((r) => ({
    webhookId: webhookId(r.webhook_id),
    url: r.url,
    state: r.state,
    attempts: r.attempts,
    nextAttemptAt: r.state === "pending" ? r.next_at : null,
    createdAt: r.created_at,
    finishedAt: r.finished_at,
    history: (r.history as { at: string; outcome: CallbackAttempt["outcome"]; statusCode?: number; error?: string }[]).map((h) => ({ ...h, at: new Date(h.at) })),
  }));
}

/** Deliveries not yet delivered nor given up (index callbacks_due), counted up to `cap`. */
export async function pendingCallbacks(db: Db, cap = 100_000): Promise<number> {
  const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM (SELECT 1 FROM callbacks WHERE state = 'pending' LIMIT ${cap}) p`.execute(db);
  return rows[0]?.n ?? 0;
}
