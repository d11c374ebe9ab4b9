import { sql } from "kysely";
import type { Db } from "./database.ts";

const SEED_LOCK = 0x727462_02;

/**
 * Fill an empty backlog with `count` units of kind `simulate`, spread over five groups.
 * Under an advisory lock so that replicas starting together seed once. Returns how many
 * units were created (0 when the backlog was not empty).
 */
export async function seedIfEmpty(db: Db, count: number, maxAttempts: number): Promise<number> {
  if (count <= 0) return 0;
  return db.transaction().execute(async (trx) => {
    await sql`SELECT pg_advisory_xact_lock(${SEED_LOCK})`.execute(trx);
    const { numAffectedRows } = await sql`
      INSERT INTO units (kind, group_name, priority, payload, max_attempts)
      SELECT 'simulate', 'customer-' || (1 + (i - 1) % 5), 0, jsonb_build_object('n', i), ${maxAttempts}
      FROM generate_series(1, ${count}) AS i
      WHERE NOT EXISTS (SELECT 1 FROM units)`.execute(trx);
    return Number(numAffectedRows ?? 0);
  });
}
