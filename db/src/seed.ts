import { sql } from "kysely";
import type { Db } from "./database.ts";

const SEED_LOCK = 0x727462_02;

/**
 * Fill the backlog of a database that never had a unit with `count` units of kind
 * `simulate`, spread over five groups. Under an advisory lock so that replicas starting
 * together seed once. Returns how many units were created (0 when the database has units, or
 * had them: an empty table whose units were all pruned by retention is not seeded again).
 */
export async function seedIfEmpty(db: Db, count: number, maxAttempts: number): Promise<number> {
  if (count <= 0) return 0;
  return db.transaction().execute(async (trx) => {
    await sql`SELECT pg_advisory_xact_lock(${SEED_LOCK})`.execute(trx);
    if (await trx.selectFrom("units").select("id").limit(1).executeTakeFirst()) return 0;
    if ((await trx.selectFrom("retention").select("pruned_units").executeTakeFirstOrThrow()).pruned_units > 0) return 0;
    const { created } = await seedUnits(trx, { count, kind: "simulate", groups: 5, priority: 0, maxAttempts });
    return created;
  });
}

export interface SeedOptions {
  count: number;
  /** Must match the kind rule (KIND_PATTERN in @rtb/protocol, the units table's CHECK). */
  kind: string;
  /** Units are spread round-robin over `customer-1` .. `customer-<groups>`. */
  groups: number;
  priority: number;
  maxAttempts: number;
}

/**
 * Add `count` units to the backlog, whatever is there already (`rtb seed`). One set-based
 * statement, so a million units is one round trip; the ids come back as a range, not as rows.
 * Each unit's payload is `{ n }`, its position in this seed (1 .. count).
 */
export async function seedUnits(db: Db, opts: SeedOptions): Promise<{ created: number; firstId: number | null; lastId: number | null }> {
  if (opts.count <= 0) return { created: 0, firstId: null, lastId: null };
  const { rows } = await sql<{ created: number; firstId: number | null; lastId: number | null }>`
    WITH created AS (
      INSERT INTO units (kind, group_name, priority, payload, max_attempts)
      SELECT ${opts.kind}, 'customer-' || (1 + (i - 1) % ${opts.groups}::int), ${opts.priority}::int, jsonb_build_object('n', i), ${opts.maxAttempts}::int
      FROM generate_series(1, ${opts.count}::int) AS i
      ORDER BY i
      RETURNING id
    )
    SELECT count(*)::int AS created, min(id) AS "firstId", max(id) AS "lastId" FROM created`.execute(db);
  const row = rows[0]!;
  return { created: row.created, firstId: row.firstId, lastId: row.lastId };
}
