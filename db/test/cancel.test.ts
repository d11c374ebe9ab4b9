import { sql } from "kysely";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  applyStatusUpdates,
  cancelMatching,
  cancelUnit,
  checkTallies,
  checkTimelines,
  claimTopUp,
  compactTallies,
  nextInLine,
  retryUnit,
  setDispatching,
  tallyByStatus,
  countByStatus,
  type CancelledAttempt,
  type DbHandle,
  type ReportedUpdate,
} from "@rtb/db";
import { openTestDb, useTestPlace } from "@rtb/testing";

/** Cancelling in every status that is not terminal, one unit or in batches: rows, timelines, tallies, late reports. */
const place = useTestPlace();
let h: DbHandle;
const opts = { retryBaseMs: 1_000, retryMaxMs: 60_000 };
const by = { address: "127.0.0.1", userAgent: "test", tokenPresented: false };

beforeAll(async () => {
  h = place.own(openTestDb(place));
  await setDispatching(h.db, true);
});

beforeEach(async () => {
  await sql`DELETE FROM unit_events`.execute(h.db);
  await sql`DELETE FROM units`.execute(h.db);
  await compactTallies(h.db);
});

async function enqueue(n: number, group = "g", kind = "simulate"): Promise<number[]> {
  const rows = await h.db
    .insertInto("units")
    .values(Array.from({ length: n }, () => ({ kind, group_name: group, priority: 0, payload: "{}", status: "pending" as const, max_attempts: 3 })))
    .returning("id")
    .execute();
  return rows.map((r) => r.id);
}

const report = (unitId: number, attempt: number, status: ReportedUpdate["status"], extra: Partial<ReportedUpdate> = {}): ReportedUpdate => ({
  unitId,
  attempt,
  status,
  at: new Date(),
  source: "agent:t",
  ...extra,
});

/** The tallies (folded or not) agree with the table, and every timeline rule holds. */
async function expectExact() {
  expect(await checkTallies(h.db)).toEqual([]);
  expect(await tallyByStatus(h.db)).toEqual(await countByStatus(h.db));
  expect(await checkTimelines(h.db)).toEqual([]);
}

describe("cancelUnit", () => {
  it("cancels a unit in each status that is not terminal, records the operator and who asked, and says what was in flight", async () => {
    // The top-up takes the lowest ids first: the last one stays pending.
    const [dispatched, queued, processing, pending] = await enqueue(4);
    await claimTopUp(h.db, 3);
    await applyStatusUpdates(h.db, [report(queued!, 1, "queued"), report(processing!, 1, "processing")], opts);

    const results = await Promise.all([pending, dispatched, queued, processing].map((id) => cancelUnit(h.db, id!, by)));
    expect(results.map((r) => r.outcome === "done" && [r.from, r.inFlight?.from ?? null])).toEqual([
      ["pending", null],
      ["dispatched", "dispatched"],
      ["queued", "queued"],
      ["processing", "processing"],
    ]);
    for (const r of results) expect(r).toMatchObject({ outcome: "done", unit: { status: "cancelled" } });
    const events = await h.db.selectFrom("unit_events").selectAll().where("status", "=", "cancelled").orderBy("unit_id").execute();
    expect(events.map((e) => [e.unit_id, e.attempt, e.source, e.detail])).toEqual([
      [dispatched, 1, "operator", { action: "cancel", from: "dispatched", by }],
      [queued, 1, "operator", { action: "cancel", from: "queued", by }],
      [processing, 1, "operator", { action: "cancel", from: "processing", by }],
      [pending, 0, "operator", { action: "cancel", from: "pending", by }],
    ]);
    await expectExact();

    // Finished: a conflict, and nothing written.
    const again = await cancelUnit(h.db, processing!, by);
    expect(again).toMatchObject({ outcome: "conflict", unit: { status: "cancelled" } });
    expect(await cancelUnit(h.db, 987_654_321, by)).toEqual({ outcome: "not_found" });
  });

  it("a cancelled ready unit leaves the ready counts: GET /next and the top-up never see it", async () => {
    const [a, b] = await enqueue(2);
    await compactTallies(h.db);
    await cancelUnit(h.db, a!, by);
    expect((await nextInLine(h.db, 10)).map((u) => u.id)).toEqual([b]);
    await expectExact();
    await compactTallies(h.db);
    expect((await claimTopUp(h.db, 10)).units.map((u) => u.unitId)).toEqual([b]);
    await expectExact();
  });

  it("late reports of a cancelled attempt change nothing and are counted as cancelled; queued/processing ones are listed to announce again", async () => {
    const [id] = await enqueue(1);
    await claimTopUp(h.db, 1);
    await applyStatusUpdates(h.db, [report(id!, 1, "processing")], opts);
    await cancelUnit(h.db, id!, by);
    const late = await applyStatusUpdates(h.db, [report(id!, 1, "processing", { source: "agent:other" }), report(id!, 1, "success", { result: 7 })], opts);
    expect(late).toMatchObject({ applied: 0, ignored: { cancelled: 2 }, freed: 0, cancelledRunning: [{ unitId: id, attempt: 1 }] });
    const row = await h.db.selectFrom("units").selectAll().where("id", "=", id!).executeTakeFirstOrThrow();
    expect(row).toMatchObject({ status: "cancelled", result: null, attempt: 1 });
    await expectExact();

    // Retried: a new attempt; the old one's reports are stale, and the new one runs as usual.
    expect(await retryUnit(h.db, id!)).toMatchObject({ outcome: "done", unit: { status: "pending" } });
    await claimTopUp(h.db, 1);
    const after = await applyStatusUpdates(h.db, [report(id!, 1, "success"), report(id!, 2, "processing"), report(id!, 2, "success", { result: 8 })], opts);
    expect(after).toMatchObject({ applied: 2, ignored: { stale_attempt: 1 }, cancelledRunning: [] });
    const events = await h.db.selectFrom("unit_events").select(["attempt", "status"]).where("unit_id", "=", id!).orderBy("id").execute();
    expect(events.map((e) => `${e.attempt}:${e.status}`)).toEqual(["1:dispatched", "1:processing", "1:cancelled", "1:pending", "2:dispatched", "2:processing", "2:success"]);
    await expectExact();
  });

  it("against a retryable error's backoff: the unit waiting for its retry is cancelled and is never dispatched again", async () => {
    const [id] = await enqueue(1);
    await claimTopUp(h.db, 1);
    await applyStatusUpdates(h.db, [report(id!, 1, "error", { error: { message: "boom", retryable: true } })], { retryBaseMs: 10, retryMaxMs: 10 });
    expect(await cancelUnit(h.db, id!, by)).toMatchObject({ outcome: "done", from: "pending", inFlight: null, unit: { notBefore: null } });
    await new Promise((r) => setTimeout(r, 30));
    expect((await claimTopUp(h.db, 10)).units).toEqual([]);
    await expectExact();
  });
});

describe("cancelMatching", () => {
  it("cancels every unit of a group in batches, leaves the other groups alone, and hands each batch's in-flight attempts over after it committed", async () => {
    const acme = await enqueue(23, "acme");
    const other = await enqueue(5, "globex");
    // Some of acme's in flight (dispatched by a top-up; one reported processing), some of globex's too.
    await setDispatching(h.db, true);
    const claimed = (await claimTopUp(h.db, 12)).units;
    const acmeClaimed = claimed.filter((u) => acme.includes(u.unitId));
    expect(acmeClaimed.length).toBeGreaterThan(0);
    await applyStatusUpdates(h.db, [report(acmeClaimed[0]!.unitId, 1, "processing")], opts);

    const batches: CancelledAttempt[][] = [];
    const totals = await cancelMatching(h.db, { group: "acme" }, by, {
      batchSize: 5,
      onBatch: async (units) => {
        // Committed already: another connection sees them cancelled.
        const rows = await h.db.selectFrom("units").select("status").where("id", "in", units.map((u) => u.unitId)).execute();
        expect(rows.every((r) => r.status === "cancelled")).toBe(true);
        batches.push(units);
      },
    });
    expect(totals).toEqual({ cancelled: 23, inFlight: acmeClaimed.length });
    expect(batches.flat().map((u) => u.unitId).sort((a, b) => a - b)).toEqual(acmeClaimed.map((u) => u.unitId).sort((a, b) => a - b));
    expect(batches.flat().find((u) => u.unitId === acmeClaimed[0]!.unitId)?.from).toBe("processing");
    const statuses = await h.db.selectFrom("units").select(["id", "group_name", "status"]).execute();
    expect(statuses.filter((r) => r.group_name === "acme").every((r) => r.status === "cancelled")).toBe(true);
    expect(statuses.filter((r) => r.group_name === "globex").every((r) => r.status !== "cancelled")).toBe(true);
    expect(statuses.filter((r) => r.group_name === "globex")).toHaveLength(other.length);
    const events = await h.db.selectFrom("unit_events").select(["detail"]).where("status", "=", "cancelled").execute();
    expect(events).toHaveLength(23);
    expect(events[0]!.detail).toMatchObject({ action: "cancel_matching", by });
    await expectExact();
    // Nothing left to cancel: nothing written.
    expect(await cancelMatching(h.db, { group: "acme" }, by)).toEqual({ cancelled: 0, inFlight: 0 });
  });

  it("filters by kind and status together; units enqueued after it started are not its to cancel", async () => {
    const render = await enqueue(4, "g", "render");
    await enqueue(3, "g", "email");
    await claimTopUp(h.db, 2);
    const totals = await cancelMatching(h.db, { kind: "render", statuses: ["pending"] }, by, { batchSize: 2 });
    const rows = await h.db.selectFrom("units").select(["id", "kind", "status"]).orderBy("id").execute();
    const renderRows = rows.filter((r) => r.kind === "render");
    expect(totals.cancelled).toBe(renderRows.filter((r) => r.status === "cancelled").length);
    expect(renderRows.filter((r) => r.status === "dispatched").length + totals.cancelled).toBe(render.length);
    expect(rows.filter((r) => r.kind === "email").every((r) => r.status !== "cancelled")).toBe(true);
    expect(totals.inFlight).toBe(0);
    await expectExact();
  });
});
