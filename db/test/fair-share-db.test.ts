import fc from "fast-check";
import { sql } from "kysely";
import { beforeAll, describe, expect, it } from "vitest";
import {
  cancelMatching,
  cancelUnit,
  checkTallies,
  claimTopUp,
  compactTallies,
  countByStatus,
  nextInLine,
  planDispatch,
  setDispatching,
  tallyByStatus,
  type DbHandle,
  type GroupShare,
  type ReadyGroup,
} from "@rtb/db";
import { isInFlight } from "@rtb/protocol";
import { openTestDb, useTestPlace } from "@rtb/testing";

// The dispatch order against PostgreSQL, on random backlogs: priorities, groups (more of them
// than picks, names that sort differently as UTF-16 and as code points), weights, in-flight
// limits, service memories, units already in flight, retry backoffs and delayed starts (ended and not), tallies
// folded or not, units cancelled one by one and by group between top-ups. Each run starts from an empty table (DELETE, not TRUNCATE: the tallies are
// kept by triggers) and takes a few top-ups in a row, units finishing in between.
const place = useTestPlace();
let h: DbHandle;

beforeAll(async () => {
  h = place.own(openTestDb(place));
  await setDispatching(h.db, true);
});

const NAMES = ["a", "b", "B", "c", "d", "e", "é", "z", "\u{1F600}", "\uE000", "g-10", "g-9"];
const unit = fc.record({
  group: fc.constantFrom(...NAMES),
  priority: fc.integer({ min: 0, max: 2 }),
  // A delayed unit (POST /units runAt, delayMs) is a never-dispatched unit with not_before set.
  state: fc.constantFrom("ready", "ready", "ready", "ready", "backoff", "backoff-ended", "delayed", "delay-ended", "in-flight"),
});
const backlog = fc.record({
  units: fc.array(unit, { minLength: 0, maxLength: 80, size: "max" }),
  shares: fc.dictionary(
    fc.constantFrom(...NAMES),
    fc.record({
      weight: fc.constantFrom(1, 1, 2, 0.5, 3),
      maxInFlight: fc.option(fc.integer({ min: 1, max: 5 }), { nil: null }),
      lastServed: fc.option(fc.integer({ min: 1, max: 6 }), { nil: null }),
    }),
  ),
  steps: fc.array(
    fc.record({
      k: fc.integer({ min: 1, max: 20 }),
      fold: fc.boolean(),
      finish: fc.integer({ min: 0, max: 4 }),
      // Operators cancelling units (cancel.ts) in any status that is not terminal, and a whole group.
      cancel: fc.integer({ min: 0, max: 3 }),
      cancelGroup: fc.option(fc.constantFrom(...NAMES), { nil: null }),
    }),
    { minLength: 1, maxLength: 4 },
  ),
});

type Backlog = typeof backlog extends fc.Arbitrary<infer T> ? T : never;

async function load(b: Backlog): Promise<void> {
  await sql`DELETE FROM unit_events`.execute(h.db);
  await sql`DELETE FROM units`.execute(h.db);
  await sql`DELETE FROM unit_groups`.execute(h.db);
  await compactTallies(h.db);
  await sql`UPDATE control SET served_seq = 10`.execute(h.db);
  for (const [name, s] of Object.entries(b.shares)) {
    await h.db.insertInto("unit_groups").values({ name, weight: s.weight, max_in_flight: s.maxInFlight, last_served: s.lastServed }).execute();
  }
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
        not_before:
          u.state === "backoff" || u.state === "delayed" ? new Date(now + 600_000) : u.state === "backoff-ended" || u.state === "delay-ended" ? new Date(now - 1_000) : null,
      })),
    )
    .execute();
}

/**
 * The next k units by the pure dispatch order over the exact state, counted from the units
 * table itself (no tallies, every group): what the database's reads must reproduce.
 */
async function model(k: number): Promise<number[]> {
  const units = await h.db.selectFrom("units").select(["id", "group_name", "priority", "status", "not_before"]).orderBy("id").execute();
  const groups = await h.db.selectFrom("unit_groups").selectAll().execute();
  const queues = new Map<string, number[]>();
  const inFlight = new Map<string, number>();
  for (const u of units) {
    if (u.status === "pending" && u.not_before === null) {
      const key = `${u.priority}\u0000${u.group_name}`;
      queues.set(key, [...(queues.get(key) ?? []), u.id]);
    }
    if (isInFlight(u.status)) inFlight.set(u.group_name, (inFlight.get(u.group_name) ?? 0) + 1);
  }
  const ready: ReadyGroup[] = [...queues].map(([key, ids]) => ({ group: key.split("\u0000")[1]!, priority: Number(key.split("\u0000")[0]), ready: ids.length }));
  const shares = new Map<string, GroupShare>();
  for (const r of ready) {
    const g = groups.find((x) => x.name === r.group);
    shares.set(r.group, { weight: g?.weight ?? 1, maxInFlight: g?.max_in_flight ?? null, inFlight: inFlight.get(r.group) ?? 0, lastServed: g?.last_served ?? null });
  }
  return planDispatch(ready, shares, k).map((p) => queues.get(`${p.priority}\u0000${p.group}`)!.shift()!);
}

describe("dispatch order on PostgreSQL (property-based)", () => {
  it("GET /next's preview is the pure order over the exact state and exactly what the top-up dispatches; FIFO; no backoff unit; the tallies stay exact", async () => {
    await fc.assert(
      fc.asyncProperty(backlog, async (b) => {
        await load(b);
        for (const step of b.steps) {
          if (step.fold) await compactTallies(h.db);
          const preview = await nextInLine(h.db, step.k);
          // The preview released the retries whose backoff ended: the model sees them too.
          expect(preview.map((u) => u.id)).toEqual(await model(step.k));

          // Room for exactly k more: the top-up of k.
          const outstanding = (await countByStatus(h.db)).dispatched;
          const claim = await claimTopUp(h.db, outstanding + step.k);
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

          // Some units in flight finish, which frees room and changes the shares.
          const done = rows.filter((r) => ["dispatched", "processing"].includes(r.status)).slice(0, step.finish).map((r) => r.id);
          if (done.length > 0) await h.db.updateTable("units").set({ status: "success" }).where("id", "in", done).execute();
          // Some are cancelled, ready ones among them: the ready counts must follow.
          const open = rows.filter((r) => !done.includes(r.id) && ["pending", "dispatched", "processing"].includes(r.status));
          for (const r of step.cancel > 0 ? open.slice(-step.cancel) : []) await cancelUnit(h.db, r.id);
          if (step.cancelGroup !== null) await cancelMatching(h.db, { group: step.cancelGroup, statuses: ["pending"] }, {}, { batchSize: 3 });
          expect(await checkTallies(h.db)).toEqual([]);
        }
        await compactTallies(h.db);
        expect(await tallyByStatus(h.db)).toEqual(await countByStatus(h.db));
        expect(await checkTallies(h.db)).toEqual([]);
        expect((await sql<{ n: number }>`SELECT count(*)::int AS n FROM ready_deltas`.execute(h.db)).rows[0]!.n).toBe(0);
      }),
      { numRuns: 60 },
    );
  });

  it("the checker notices a tally that drifted from the table", async () => {
    await h.db.insertInto("status_tallies").values({ status: "pending", n: 1 }).execute();
    await sql`INSERT INTO ready_deltas (group_name, priority, n) VALUES ('nobody', 0, 2)`.execute(h.db);
    expect((await checkTallies(h.db)).map((v) => v.rule)).toEqual(["status_tallies_exact", "ready_tallies_exact"]);
    await h.db.insertInto("status_tallies").values({ status: "pending", n: -1 }).execute();
    await sql`INSERT INTO ready_deltas (group_name, priority, n) VALUES ('nobody', 0, -2)`.execute(h.db);
    expect(await checkTallies(h.db)).toEqual([]);
    // A folded count per priority that drifted alone.
    await sql`INSERT INTO ready_levels (priority, n) VALUES (7, 1)`.execute(h.db);
    expect(await checkTallies(h.db)).toMatchObject([{ rule: "ready_tallies_exact", message: expect.stringContaining("every group @7") }]);
    await sql`DELETE FROM ready_levels WHERE priority = 7`.execute(h.db);
    expect(await checkTallies(h.db)).toEqual([]);
  });
});
