import { sql, type Transaction } from "kysely";
import { DUTY_NAMES } from "@rtb/protocol";
import type { Database } from "./schema.ts";
import type { Db } from "./database.ts";

/**
 * Work done once across api replicas. Each duty is held by one api at a time under a lease (a
 * row of `duty_leases`, migration 0011): an api takes a duty that is free or whose lease
 * expired, renews it while it runs, and gives it up when it stops; one that dies stops
 * renewing, and another api takes the duty once the lease has expired. Only the holder does
 * the duty's work (services/api/src/duties.ts).
 *
 * A lease alone cannot rule out two holders at once: a holder paused past its lease (a long
 * garbage collection, a frozen VM) wakes believing it still holds it. So the duties whose
 * passes are transactions (schedules, retention) also run each pass under the duty's
 * transaction-scoped advisory lock, and check in that transaction that the lease is still
 * theirs (`asDuty`): two passes never overlap, and a holder whose lease went to another api
 * does nothing. The locks are in the same key space as the top-up's and the seed's
 * (0x727462_xx), one key per duty. The tally folds take the top-up's lock already.
 */
export type Duty = (typeof DUTY_NAMES)[number];

export const DUTY_LOCKS: Record<Duty, number> = {
  reconciler: 0x727462_12,
  schedules: 0x727462_10,
  retention: 0x727462_11,
  tallies: 0x727462_13,
};

/** Every duty, in the order they are claimed (the same in every api, so claims never deadlock). */
export const DUTIES: readonly Duty[] = DUTY_NAMES;

/** A duty as GET / shows it. */
export interface DutyLease {
  duty: Duty;
  /** Its holder while the lease runs; null once it expired (the next api to look takes it). */
  holder: string | null;
  /** The api that held it last, whether its lease runs or not. */
  lastHolder: string;
  /** When the last holder took it. */
  since: Date;
  expiresAt: Date;
  /** Times it passed from one api to another. */
  handovers: number;
}

/**
 * Take or renew, for `holder`, every duty that is free, expired, or already its own; returns
 * the duties `holder` holds now, each until `ttlMs` after the database's now(). One statement;
 * the rows are locked in DUTIES order, so two apis claiming at once wait for each other, never
 * deadlock, and each duty goes to one of them.
 */
export async function claimDuties(db: Db, holder: string, ttlMs: number): Promise<Duty[]> {
  const { rows } = await sql<{ duty: Duty }>`
    INSERT INTO duty_leases AS l (duty, holder, since, renewed_at, expires_at)
    SELECT d, ${holder}, now(), now(), now() + ${ttlMs} * interval '1 millisecond'
    FROM unnest(${DUTIES}::text[]) WITH ORDINALITY AS t(d, n) ORDER BY n
    ON CONFLICT (duty) DO UPDATE SET
      holder = EXCLUDED.holder,
      since = CASE WHEN l.holder = EXCLUDED.holder THEN l.since ELSE EXCLUDED.since END,
      handovers = l.handovers + (l.holder <> EXCLUDED.holder)::int,
      renewed_at = EXCLUDED.renewed_at,
      expires_at = EXCLUDED.expires_at
    WHERE l.holder = EXCLUDED.holder OR l.expires_at <= now()
    RETURNING duty`.execute(db);
  return rows.map((r) => r.duty);
}

/** Give up `holder`'s leases (an api stopping): the other apis take them on their next claim. */
export async function releaseDuties(db: Db, holder: string): Promise<void> {
  await sql`UPDATE duty_leases SET expires_at = now() WHERE holder = ${holder} AND expires_at > now()`.execute(db);
}

/** Every duty that was ever held, in DUTIES order. */
export async function dutyLeases(db: Db): Promise<DutyLease[]> {
  const { rows } = await sql<{ duty: Duty; holder: string | null; last_holder: string; since: Date; expires_at: Date; handovers: string }>`
    SELECT duty, CASE WHEN expires_at > now() THEN holder END AS holder, holder AS last_holder, since, expires_at, handovers
    FROM duty_leases`.execute(db);
  return rows
    .map((r) => ({ duty: r.duty, holder: r.holder, lastHolder: r.last_holder, since: r.since, expiresAt: r.expires_at, handovers: Number(r.handovers) }))
    .sort((a, b) => DUTIES.indexOf(a.duty) - DUTIES.indexOf(b.duty));
}

/**
 * Run `fn` in a transaction holding `duty`'s advisory lock, or skip it when another pass holds
 * it. With `holder`, also skip it unless `holder`'s lease on the duty still runs, checked in
 * the same transaction: a holder that lost its lease while paused does nothing. `{ ran: false }`
 * says it was skipped; never waits for the lock.
 */
export async function asDuty<T>(db: Db, duty: Duty, fn: (trx: Transaction<Database>) => Promise<T>, holder?: string): Promise<{ ran: true; value: T } | { ran: false }> {
  return db.transaction().execute(async (trx) => {
    const { rows } = await sql<{ held: boolean }>`
      SELECT pg_try_advisory_xact_lock(${DUTY_LOCKS[duty]})
        AND (${holder ?? null}::text IS NULL OR EXISTS (SELECT FROM duty_leases WHERE duty = ${duty} AND holder = ${holder ?? null} AND expires_at > now())) AS held`.execute(trx);
    if (!rows[0]?.held) return { ran: false as const };
    return { ran: true as const, value: await fn(trx) };
  });
}
