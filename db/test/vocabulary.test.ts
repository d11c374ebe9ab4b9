import { beforeAll, describe, expect, it } from "vitest";
import { sql } from "kysely";
import { KIND_PATTERN, UNIT_STATUSES } from "@rtb/protocol";
import type { DbHandle } from "@rtb/db";
import { openTestDb, useTestPlace } from "@rtb/testing";

/**
 * The database's CHECKs (written in the migrations) and @rtb/protocol's vocabulary are one
 * rule: a status added to UNIT_STATUSES without its migration, or the other way round, fails
 * here rather than in production.
 */
const place = useTestPlace();
let h: DbHandle;

beforeAll(() => {
  h = place.own(openTestDb(place));
});

/** Inserts a unit in a transaction that is always rolled back; the SQLSTATE if refused. */
async function refusal(row: { status?: string; kind?: string }): Promise<string | null> {
  try {
    await h.db.transaction().execute(async (trx) => {
      await sql`INSERT INTO units (kind, group_name, payload, status, max_attempts) VALUES (${row.kind ?? "k"}, 'g', '{}', ${row.status ?? "pending"}, 1)`.execute(trx);
      throw new Error("rollback");
    });
  } catch (err) {
    return (err as { code?: string }).code ?? null;
  }
  return null;
}

describe("the database and @rtb/protocol agree", () => {
  it("units.status takes every status of UNIT_STATUSES and nothing else", async () => {
    for (const status of UNIT_STATUSES) expect(await refusal({ status }), status).toBeNull();
    expect(await refusal({ status: "nonsense" })).toBe("23514");
    const { rows } = await sql<{ def: string }>`
      SELECT pg_get_constraintdef(c.oid) AS def FROM pg_constraint c
      WHERE c.conrelid = 'units'::regclass AND c.contype = 'c' AND pg_get_constraintdef(c.oid) LIKE '%status%'`.execute(h.db);
    const allowed = [...rows.map((r) => r.def).join(" ").matchAll(/'([a-z_]+)'/g)].map((m) => m[1]);
    expect(allowed.sort()).toEqual([...UNIT_STATUSES].sort());
  });

  it("units.kind follows KIND_PATTERN: its longest kind fits and one more character does not", async () => {
    const { rows } = await sql<{ def: string }>`
      SELECT pg_get_constraintdef(c.oid) AS def FROM pg_constraint c
      WHERE c.conrelid = 'units'::regclass AND c.contype = 'c' AND pg_get_constraintdef(c.oid) LIKE '%kind%'`.execute(h.db);
    expect(rows.map((r) => r.def).join(" ")).toContain(KIND_PATTERN.source);
    expect(await refusal({ kind: "k".repeat(100) })).toBeNull();
    expect(await refusal({ kind: "k".repeat(101) })).toBe("23514");
    expect(KIND_PATTERN.test("k".repeat(100)) && !KIND_PATTERN.test("k".repeat(101))).toBe(true);
  });
});
