import { sql } from "kysely";
import { beforeEach, describe, expect, it } from "vitest";
import { applyStatusUpdates, asDuty, checkTallies, checkTimelines, enqueueUnits, pruneBatch, pruneDue, retentionTotals, seedIfEmpty, type Db, type DbHandle, type Pruned } from "@rtb/db";
import { UNIT_STATUSES, type UnitStatus } from "@rtb/protocol";
import { openTestDb, useTestPlace } from "@rtb/testing";

/** Retention (db/src/retention.ts): what a pass deletes, and what it must leave alone. */
// A database per test: the totals start at 0 in each.
const place = useTestPlace({ perTest: true });
let a: DbHandle;
let b: DbHandle;

beforeEach(() => {
  a = place.own(openTestDb(place));
  b = place.own(openTestDb(place));
});

const HOUR = 3_600_000;

/** Each status's timeline, as the status rules would have written it (attempt 1; pending and cancelled never dispatched). */
const timelines: Record<UnitStatus, { status: string; detail?: string }[]> = {
  blocked: [],
  pending: [],
  dispatched: [{ status: "dispatched" }],
  queued: [{ status: "dispatched" }, { status: "queued" }],
  processing: [{ status: "dispatched" }, { status: "queued" }, { status: "processing" }],
  success: [{ status: "dispatched" }, { status: "queued" }, { status: "processing" }, { status: "success" }],
  error: [{ status: "dispatched" }, { status: "error", detail: '{"retryable": false, "final": true}' }],
  cancelled: [{ status: "cancelled", detail: '{"action": "cancel"}' }],
};

/** `n` units in `status`, last changed `ageMs` ago, each with its timeline; their ids. */
async function unitsIn(db: Db, status: UnitStatus, n: number, ageMs: number, ref?: string): Promise<number[]> {
  const attempt = timelines[status].some((e) => e.status === "dispatched") ? 1 : 0;
  const { rows } = await sql<{ id: number }>`
    INSERT INTO units (kind, group_name, payload, status, attempt, max_attempts, ref, dispatched_at, updated_at)
    SELECT 'k', 'g', '{}', ${status}, ${attempt}, 3, ${ref ?? null}, CASE WHEN ${attempt} > 0 THEN now() END, now() - make_interval(secs => ${ageMs / 1000})
    FROM generate_series(1, ${n})
    RETURNING id`.execute(db);
  const ids = rows.map((r) => r.id);
  for (const e of timelines[status]) {
    await sql`
      INSERT INTO unit_events (unit_id, attempt, status, at, source, detail)
      SELECT id, ${attempt}, ${e.status}, now(), 'test', ${e.detail ?? null}::jsonb FROM unnest(${sql.val(ids)}::bigint[]) AS id`.execute(db);
  }
  return ids;
}

/** Batches until one comes back short, as the api's pass does. */
async function prune(db: Db, retentionMs: number, limit = 1_000): Promise<Pruned[]> {
  const batches: Pruned[] = [];
  for (;;) {
    const r = await asDuty(db, "retention", (trx) => pruneBatch(trx, { retentionMs, limit, by: "test" }));
    if (!r.ran) throw new Error("the duty was held");
    batches.push(r.value);
    if (r.value.units < limit) return batches;
  }
}

const eventsByUnit = async (db: Db) => {
  const rows = await db.selectFrom("unit_events").select(["unit_id", (eb) => eb.fn.countAll<number>().as("n")]).groupBy("unit_id").execute();
  return new Map(rows.map((r) => [r.unit_id, r.n]));
};
const unitIds = async (db: Db) => (await db.selectFrom("units").select("id").orderBy("id").execute()).map((r) => r.id);

describe("pruning", () => {
  it("deletes exactly the finished units older than the retention, with their events, and nothing else", async () => {
    const old: Record<string, number[]> = {};
    const recent: Record<string, number[]> = {};
    for (const s of UNIT_STATUSES) {
      old[s] = await unitsIn(a.db, s, 5, 2 * HOUR);
      recent[s] = await unitsIn(a.db, s, 3, 60_000);
    }
    const gone = [...old.success!, ...old.error!, ...old.cancelled!];
    const before = await eventsByUnit(a.db);
    const goneEvents = gone.reduce((n, id) => n + (before.get(id) ?? 0), 0);
    expect(await pruneDue(a.db, HOUR, 10_000)).toBe(gone.length);

    const batches = await prune(a.db, HOUR);
    expect(batches.reduce((n, x) => n + x.units, 0)).toBe(gone.length);
    expect(batches.reduce((n, x) => n + x.events, 0)).toBe(goneEvents);

    // Pending and in-flight units of any age, and recently finished ones, stay, each with its whole timeline.
    const kept = (await unitIds(a.db)).sort((x, y) => x - y);
    const all = [...Object.values(old), ...Object.values(recent)].flat();
    expect(kept).toEqual(all.filter((id) => !gone.includes(id)).sort((x, y) => x - y));
    const after = await eventsByUnit(a.db);
    for (const id of kept) expect(after.get(id), `events of unit ${id}`).toBe(before.get(id));
    for (const id of gone) expect(after.has(id)).toBe(false);

    // GET /'s counts and the ready counts still match the table; every timeline left is whole.
    expect(await checkTallies(a.db)).toEqual([]);
    expect(await checkTimelines(a.db)).toEqual([]);
    const totals = await retentionTotals(a.db);
    expect(totals.pruned).toEqual({ units: gone.length, events: goneEvents });
    expect(totals.lastRunBy).toBe("test");
    expect(totals.lastRunAt).toBeInstanceOf(Date);
    expect(await pruneDue(a.db, HOUR, 10_000)).toBe(0);
  });

  it("works in batches: more units than one batch take several transactions, each of at most the limit", async () => {
    await unitsIn(a.db, "success", 250, 2 * HOUR);
    await unitsIn(a.db, "pending", 10, 2 * HOUR);
    const batches = await prune(a.db, HOUR, 100);
    expect(batches.map((x) => x.units)).toEqual([100, 100, 50]);
    expect(batches.map((x) => x.events)).toEqual([400, 400, 200]);
    expect((await unitIds(a.db)).length).toBe(10);
    expect(await checkTallies(a.db)).toEqual([]);
    expect((await retentionTotals(a.db)).pruned).toEqual({ units: 250, events: 1_000 });
    // The due count stops at its cap.
    await unitsIn(a.db, "error", 30, 2 * HOUR);
    expect(await pruneDue(a.db, HOUR, 20)).toBe(20);
  });

  it("two replicas pruning at once delete each unit once and count it once", async () => {
    await unitsIn(a.db, "success", 1_200, 2 * HOUR);
    // Each replica loops until nothing is due, taking the duty whenever the other does not hold it.
    const drain = async (db: Db) => {
      let mine = 0;
      for (;;) {
        const r = await asDuty(db, "retention", (trx) => pruneBatch(trx, { retentionMs: HOUR, limit: 50, by: db === a.db ? "a" : "b" }));
        if (!r.ran) {
          await new Promise((resolve) => setTimeout(resolve, 1));
          continue;
        }
        mine += r.value.units;
        if (r.value.units === 0) return mine;
      }
    };
    const [byA, byB] = await Promise.all([drain(a.db), drain(b.db)]);
    expect(byA + byB).toBe(1_200);
    expect((await retentionTotals(a.db)).pruned).toEqual({ units: 1_200, events: 4_800 });
    expect(await unitIds(a.db)).toEqual([]);
    expect(await checkTallies(a.db)).toEqual([]);
  });

  it("leaves a finished unit alone while it is being changed (an operator's retry), and keeps it when that commits", async () => {
    const [busy] = await unitsIn(a.db, "error", 1, 2 * HOUR);
    const [idle] = await unitsIn(a.db, "error", 1, 2 * HOUR);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let locked!: () => void;
    const lockedNow = new Promise<void>((r) => (locked = r));
    const retry = b.db.transaction().execute(async (trx) => {
      await sql`UPDATE units SET status = 'pending', updated_at = now() WHERE id = ${busy}`.execute(trx);
      await sql`INSERT INTO unit_events (unit_id, attempt, status, at, source) VALUES (${busy}, 1, 'pending', now(), 'operator')`.execute(trx);
      locked();
      await held;
    });
    await lockedNow;
    const batches = await prune(a.db, HOUR);
    expect(batches.reduce((n, x) => n + x.units, 0)).toBe(1);
    release();
    await retry;
    // The idle one went; the one being retried is pending now, with its whole timeline.
    expect(await unitIds(a.db)).toEqual([busy]);
    expect(idle).not.toBe(busy);
    expect((await eventsByUnit(a.db)).get(busy!)).toBe(3);
    expect(await checkTallies(a.db)).toEqual([]);
  });

  it("frees a pruned unit's ref: the same ref enqueued again is a new unit", async () => {
    const [first] = await enqueueUnits(a.db, [{ kind: "k", group: "g", priority: 0, payload: {}, ref: "order-1", maxAttempts: 3 }]);
    // Until it is pruned, the ref names the unit, finished or not.
    await sql`UPDATE units SET status = 'success', attempt = 1, updated_at = now() - interval '2 hours' WHERE id = ${first!.id}`.execute(a.db);
    const [same] = await enqueueUnits(a.db, [{ kind: "k", group: "g", priority: 0, payload: {}, ref: "order-1", maxAttempts: 3 }]);
    expect(same).toMatchObject({ id: first!.id, created: false, status: "success" });

    await prune(a.db, HOUR);
    const [again] = await enqueueUnits(a.db, [{ kind: "k", group: "g", priority: 0, payload: {}, ref: "order-1", maxAttempts: 3 }]);
    expect(again).toMatchObject({ created: true, status: "pending", ref: "order-1" });
    expect(again!.id).not.toBe(first!.id);
    expect(await checkTallies(a.db)).toEqual([]);
  });

  it("does not seed again a database whose units were all pruned (an api restarting after a quiet week)", async () => {
    await unitsIn(a.db, "success", 20, 2 * HOUR);
    await prune(a.db, HOUR);
    expect(await unitIds(a.db)).toEqual([]);
    expect(await seedIfEmpty(a.db, 100, 3)).toBe(0);
    expect(await unitIds(a.db)).toEqual([]);
  });
});

describe("what pruning relies on", () => {
  it("a finished unit's updated_at stays when it finished: late, duplicate and stale reports change nothing", async () => {
    const [done] = await unitsIn(a.db, "success", 1, 2 * HOUR);
    const [failed] = await unitsIn(a.db, "error", 1, 2 * HOUR);
    const before = await a.db.selectFrom("units").select(["id", "updated_at"]).orderBy("id").execute();
    const at = new Date();
    const result = await applyStatusUpdates(
      a.db,
      [done!, failed!].flatMap((unitId) => [
        { unitId, attempt: 1, status: "success" as const, at, source: "agent:t" },
        { unitId, attempt: 1, status: "processing" as const, at, source: "agent:t" },
        { unitId, attempt: 1, status: "error" as const, at, source: "agent:t", error: { message: "late", retryable: true } },
        { unitId, attempt: 2, status: "success" as const, at, source: "agent:t" },
      ]),
      { retryBaseMs: 1_000, retryMaxMs: 60_000 },
    );
    expect(result.applied).toBe(0);
    expect(await a.db.selectFrom("units").select(["id", "updated_at"]).orderBy("id").execute()).toEqual(before);
    expect(await pruneDue(a.db, HOUR, 10)).toBe(2);
  });
});
