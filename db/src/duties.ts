import { sql, type Transaction } from "kysely";
import type { Database } from "./schema.ts";
import type { Db } from "./database.ts";

/**
 * Work done once across api replicas (schedules, retention): each pass of a duty runs in a
 * transaction that first tries that duty's transaction-scoped advisory lock. The replica that
 * gets it does the pass; the others skip theirs. A holder that dies loses the lock with its
 * connection, so the duty moves to another replica on its next pass. The locks are in the
 * same key space as the top-up's and the seed's (0x727462_xx), one key per duty.
 */
export const DUTY_LOCKS = {
  schedules: 0x727462_10,
  retention: 0x727462_11,
} as const;

export type Duty = keyof typeof DUTY_LOCKS;

/**
 * Run `fn` in a transaction holding `duty`'s lock, or skip it when another replica holds it.
 * `{ ran: false }` says it was skipped; never waits for the lock.
 */
export async function asDuty<T>(db: Db, duty: Duty, fn: (trx: Transaction<Database>) => Promise<T>): Promise<{ ran: true; value: T } | { ran: false }> {
  return db.transaction().execute(async (trx) => {
    const { rows } = await sql<{ held: boolean }>`SELECT pg_try_advisory_xact_lock(${DUTY_LOCKS[duty]}) AS held`.execute(trx);
    if (!rows[0]?.held) return { ran: false as const };
    return { ran: true as const, value: await fn(trx) };
  });
}
