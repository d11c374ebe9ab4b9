import fc from "fast-check";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkTallies, claimTopUp, compactTallies, countByStatus, nextInLine, setDispatching, setGroupShare, tallyByStatus, type DbHandle } from "@rtb/db";
import { createTestPlace, destroyTestPlace, openTestDb, type TestPlace } from "@rtb/testing";

// The dispatch order against PostgreSQL, on random backlogs: priorities, groups, weights,
// in-flight limits, units already in flight, retry backoffs (ended and not). Each run starts
// from an empty table (DELETE, not TRUNCATE: the tallies are kept by triggers).
let place: TestPlace;
let h: DbHandle;

beforeAll(async () => {
  place = await createTestPlace();
  h = openTestDb(place);
  await setDispatching(h.db, true);
});
afterAll(async () => {
  await h?.close();
  if (place) await destroyTestPlace(place);
});

const unit = fc.record({
  group: fc.constantFrom("a", "b", "c", "d", "e"),
  priority: fc.integer({ min: 0, max: 2 }),
  state: fc.constantFrom("ready", "ready", "ready", "ready", "backoff", "backoff-ended", "in-flight"),
});
const backlog = fc.record({
  units: fc.array(unit, { minLength: 0, maxLength: 60 }),
  shares: fc.dictionary(
    fc.constantFrom("a", "b", "c", "d", "e"),
    fc.record({ weight: fc.constantFrom(1, 2, 0.5), maxInFlight: fc.option(fc.integer({ min: 1, max: 8 }), { nil: null }) }),
  ),
  k: fc.integer({ min: 1, max: 30 }),
});

type Backlog = typeof backlog extends fc.Arbitrary<infer T> ? T : never;

async function load(b: Backlog): Promise<void> {
  await sql`DELETE FROM unit_events`.execute(h.db);
  await sql`DELETE FROM units`.execute(h.db);
  await sql`DELETE FROM unit_groups`.execute(h.db);
  for (const [name, s] of Object.entries(b.shares)) await setGroupShare(h.db, name, s);
  if (b.units.length === 0) return;
  const now = Date.now();
  await h.db
    .insertInto("units")
    .values(
      b.units.map((u) => ({
        kind: "simulate",
        group_name: u.group,
        priority: u.priority,
        payload: "{}",
        max_attempts: 3,
        status: u.state === "in-flight" ? ("processing" as const) : ("pending" as const),
        attempt: u.state === "in-flight" ? 1 : 0,
        not_before: u.state === "backoff" ? new Date(now + 600_000) : u.state === "backoff-ended" ? new Date(now - 1_000) : null,
      })),
    )
    .execute();
}

describe("dispatch order on PostgreSQL (property-based)", () => {
  it("GET /next's preview is exactly what the top-up dispatches; FIFO within a group; no backoff unit; the tallies stay exact", async () => {
    await fc.assert(
      fc.asyncProperty(backlog, async (b) => {
        await load(b);
        const preview = await nextInLine(h.db, b.k);
        // Room for exactly k more: the top-up of k.
        const outstanding = (await countByStatus(h.db)).dispatched;
        const claim = await claimTopUp(h.db, outstanding + b.k);
        expect(claim.units.map((u) => u.unitId)).toEqual(preview.map((u) => u.id));

        // Within a group and priority, the lowest ids went first.
        const rows = await h.db.selectFrom("units").select(["id", "group_name", "priority", "status", "not_before"]).execute();
        const taken = new Set(claim.units.map((u) => u.unitId));
        for (const r of rows.filter((r) => taken.has(r.id))) {
          const skipped = rows.filter((o) => o.group_name === r.group_name && o.priority === r.priority && o.status === "pending" && o.not_before === null && o.id < r.id);
          expect(skipped).toEqual([]);
        }
        // A retry still in its backoff is never taken.
        for (const r of rows) if (r.not_before !== null && r.not_before.getTime() > Date.now()) expect(taken.has(r.id)).toBe(false);

        expect(await checkTallies(h.db)).toEqual([]);
        await compactTallies(h.db);
        expect(await tallyByStatus(h.db)).toEqual(await countByStatus(h.db));
        expect(await checkTallies(h.db)).toEqual([]);
      }),
      { numRuns: 40 },
    );
  });

  it("the checker notices a tally that drifted from the table", async () => {
    await h.db.insertInto("status_tallies").values({ status: "pending", n: 1 }).execute();
    await h.db.insertInto("ready_tallies").values({ group_name: "nobody", priority: 0, n: 2 }).execute();
    expect((await checkTallies(h.db)).map((v) => v.rule)).toEqual(["status_tallies_exact", "ready_tallies_exact"]);
    await h.db.insertInto("status_tallies").values({ status: "pending", n: -1 }).execute();
    await h.db.insertInto("ready_tallies").values({ group_name: "nobody", priority: 0, n: -2 }).execute();
    expect(await checkTallies(h.db)).toEqual([]);
  });
});
