import { sql } from "kysely";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  addDependencies,
  applyStatusUpdates,
  cancelUnit,
  checkTallies,
  checkTimelines,
  checkWorkflows,
  claimTopUp,
  compactTallies,
  countByStatus,
  enqueueUnits,
  enqueueWorkflow,
  getWorkflow,
  pruneBatch,
  retryUnit,
  setDispatching,
  tallyByStatus,
  type ClaimedUnit,
  type DbHandle,
  type NewStep,
  type ReportedUpdate,
} from "@rtb/db";
import type { FailurePolicy, Spawn } from "@rtb/protocol";
import { openTestDb, useTestPlace } from "@rtb/testing";

/** Workflows in the database: blocking, unblocking, results, failure policies, re-opening, fan-out. */
const place = useTestPlace();
let h: DbHandle;
const opts = { retryBaseMs: 1_000, retryMaxMs: 60_000, maxAttempts: 3 };

beforeAll(async () => {
  h = place.own(openTestDb(place));
  await setDispatching(h.db, true);
});

beforeEach(async () => {
  await sql`DELETE FROM unit_events`.execute(h.db);
  await sql`DELETE FROM unit_deps`.execute(h.db);
  await sql`DELETE FROM units`.execute(h.db);
  await sql`DELETE FROM workflows`.execute(h.db);
  await compactTallies(h.db);
});

const step = (name: string, dependsOn: (string | { step: string; onFailure: FailurePolicy })[] = [], kind = "simulate"): NewStep => ({
  step: name,
  unit: { kind, group: "g", priority: 0, payload: { step: name }, ref: null, maxAttempts: 1 },
  dependsOn: dependsOn.map((d) => (typeof d === "string" ? { step: d } : d)),
});

/** The order example: validate, then charge and reserve side by side, then ship, then notify. */
const order = (onFailure: FailurePolicy = "cancel", edges: Record<string, (string | { step: string; onFailure: FailurePolicy })[]> = {}) =>
  enqueueWorkflow(h.db, {
    name: "order",
    ref: null,
    onFailure,
    steps: [
      step("validate"),
      step("charge", edges.charge ?? ["validate"]),
      step("reserve", edges.reserve ?? ["validate"]),
      step("ship", edges.ship ?? ["charge", "reserve"]),
      step("notify", edges.notify ?? ["ship"]),
    ],
  });

const statuses = async (id: number) => Object.fromEntries((await getWorkflow(h.db, id))!.steps.map((s) => [s.step, s.status]));

/** Claim what is ready, by step name. */
async function claim(): Promise<Map<string, ClaimedUnit>> {
  const { units } = await claimTopUp(h.db, 1_000);
  const names = await h.db.selectFrom("units").select(["id", "step"]).where("id", "in", units.length ? units.map((u) => u.unitId) : [0]).execute();
  const byId = new Map(names.map((n) => [n.id, n.step ?? String(n.id)]));
  return new Map(units.map((u) => [byId.get(u.unitId)!, u]));
}

const report = (u: ClaimedUnit, status: ReportedUpdate["status"], extra: Partial<ReportedUpdate> = {}): ReportedUpdate => ({
  unitId: u.unitId,
  attempt: u.attempt,
  status,
  at: new Date(),
  source: "agent:t",
  ...extra,
});

async function finish(u: ClaimedUnit, outcome: "success" | "error", extra: Partial<ReportedUpdate> = {}) {
  const end = outcome === "success" ? { result: { done: u.unitId }, ...extra } : { error: { message: "declined", retryable: false }, ...extra };
  return applyStatusUpdates(h.db, [report(u, "processing"), report(u, outcome, end)], opts);
}

async function expectExact() {
  expect(await checkTallies(h.db)).toEqual([]);
  expect(await tallyByStatus(h.db)).toEqual(await countByStatus(h.db));
  expect(await checkTimelines(h.db)).toEqual([]);
  expect(await checkWorkflows(h.db)).toEqual([]);
}

describe("a workflow of five steps", () => {
  it("runs its steps in dependency order, each ready in the transaction of its last dependency's success, with their results", async () => {
    const { id } = await order();
    expect(await statuses(id)).toEqual({ validate: "pending", charge: "blocked", reserve: "blocked", ship: "blocked", notify: "blocked" });
    expect((await countByStatus(h.db)).blocked).toBe(4);
    await expectExact();

    let ready = await claim();
    expect([...ready.keys()]).toEqual(["validate"]);
    expect(ready.get("validate")!.deps).toBeUndefined();
    await finish(ready.get("validate")!, "success");
    expect(await statuses(id)).toMatchObject({ validate: "success", charge: "pending", reserve: "pending", ship: "blocked" });

    ready = await claim();
    expect([...ready.keys()].sort()).toEqual(["charge", "reserve"]);
    const validateId = ready.get("charge")!.deps!;
    expect(validateId).toEqual({ validate: { done: expect.any(Number) } });
    // One of the two: ship still waits for the other.
    await finish(ready.get("charge")!, "success");
    expect((await claim()).size).toBe(0);
    // A duplicate success changes nothing (the status rules ignore it): ship still waits.
    await applyStatusUpdates(h.db, [report(ready.get("charge")!, "success", { result: { again: true } })], opts);
    expect(await statuses(id)).toMatchObject({ ship: "blocked" });
    await finish(ready.get("reserve")!, "success");

    ready = await claim();
    const ship = ready.get("ship")!;
    expect(Object.keys(ship.deps!).sort()).toEqual(["charge", "reserve"]);
    expect(ship.deps!.charge).toEqual({ done: (await h.db.selectFrom("units").select("id").where("step", "=", "charge").executeTakeFirstOrThrow()).id });
    await finish(ship, "success");
    await finish((await claim()).get("notify")!, "success");
    const wf = (await getWorkflow(h.db, id))!;
    expect(wf.status).toBe("success");
    expect(wf.finishedAt).not.toBeNull();
    const notify = wf.steps.find((s) => s.step === "notify")!;
    expect(notify.dependsOn).toEqual([{ step: "ship", unitId: wf.steps.find((s) => s.step === "ship")!.id, onFailure: "cancel", satisfied: true }]);
    await expectExact();
  });

  it("cancels what depends on a failed step (the default), with the reason in the timeline, and ends in error", async () => {
    const { id } = await order();
    await finish((await claim()).get("validate")!, "success");
    const ready = await claim();
    await finish(ready.get("charge")!, "error");
    expect(await statuses(id)).toMatchObject({ charge: "error", reserve: "dispatched", ship: "cancelled", notify: "cancelled" });
    const ship = await h.db.selectFrom("units").selectAll().where("step", "=", "ship").executeTakeFirstOrThrow();
    const charge = await h.db.selectFrom("units").selectAll().where("step", "=", "charge").executeTakeFirstOrThrow();
    expect(ship.closed_by).toBe(charge.id);
    expect(ship.last_error).toBe(`dependency charge (unit ${charge.id}) ended in error`);
    const events = await h.db.selectFrom("unit_events").selectAll().where("unit_id", "=", ship.id).execute();
    expect(events.at(-1)).toMatchObject({ status: "cancelled", source: "workflow", detail: { reason: "dependency_failed", step: "charge", dependency: charge.id } });
    // Notify is closed too, by the same root.
    const notify = await h.db.selectFrom("units").selectAll().where("step", "=", "notify").executeTakeFirstOrThrow();
    expect(notify.closed_by).toBe(charge.id);
    expect((await getWorkflow(h.db, id))!.status).toBe("running");
    await finish(ready.get("reserve")!, "success");
    expect((await getWorkflow(h.db, id))!.status).toBe("error");
    await expectExact();

    // Retrying the failed step re-opens what it closed: the workflow runs again, and finishes.
    await retryUnit(h.db, charge.id);
    expect(await statuses(id)).toMatchObject({ charge: "pending", ship: "blocked", notify: "blocked" });
    expect((await getWorkflow(h.db, id))!.status).toBe("running");
    await expectExact();
    await finish((await claim()).get("charge")!, "success");
    await finish((await claim()).get("ship")!, "success");
    await finish((await claim()).get("notify")!, "success");
    expect((await getWorkflow(h.db, id))!.status).toBe("success");
    await expectExact();
  });

  it("fails dependents with `fail`, and runs them with what succeeded with `ignore` (per edge)", async () => {
    const failing = await order("fail");
    await finish((await claim()).get("validate")!, "error");
    expect(await statuses(failing.id)).toEqual({ validate: "error", charge: "error", reserve: "error", ship: "error", notify: "error" });
    expect((await getWorkflow(h.db, failing.id))!.status).toBe("error");
    await expectExact();

    const lenient = await order("cancel", { ship: ["charge", { step: "reserve", onFailure: "ignore" }] });
    await finish((await claim()).get("validate")!, "success");
    const ready = await claim();
    await finish(ready.get("reserve")!, "error");
    expect(await statuses(lenient.id)).toMatchObject({ reserve: "error", ship: "blocked" });
    await finish(ready.get("charge")!, "success");
    const ship = (await claim()).get("ship")!;
    expect(Object.keys(ship.deps!)).toEqual(["charge"]);
    await finish(ship, "success");
    await finish((await claim()).get("notify")!, "success");
    expect((await getWorkflow(h.db, lenient.id))!.status).toBe("error");
    await expectExact();
  });

  it("cancelling a blocked step closes its dependents; cancelling a step an ignore edge names lets its dependent run", async () => {
    const { id } = await order("cancel", { notify: [{ step: "ship", onFailure: "ignore" }] });
    const ship = await h.db.selectFrom("units").select("id").where("workflow_id", "=", id).where("step", "=", "ship").executeTakeFirstOrThrow();
    await cancelUnit(h.db, ship.id);
    expect(await statuses(id)).toMatchObject({ ship: "cancelled", notify: "pending" });
    await expectExact();
  });
});

describe("delays, priorities and groups", () => {
  it("a delayed step stays on its clock once its dependencies are satisfied; steps keep their own group and priority", async () => {
    const { id } = await enqueueWorkflow(h.db, {
      name: "order",
      ref: null,
      onFailure: "cancel",
      steps: [
        step("first"),
        { ...step("later", ["first"]), unit: { ...step("later").unit, delayMs: 3_600_000, group: "vip", priority: 7 } },
      ],
    });
    await finish((await claim()).get("first")!, "success");
    const later = await h.db.selectFrom("units").selectAll().where("workflow_id", "=", id).where("step", "=", "later").executeTakeFirstOrThrow();
    expect(later).toMatchObject({ status: "pending", group_name: "vip", priority: 7 });
    expect(later.not_before!.getTime()).toBeGreaterThan(Date.now() + 3_500_000);
    expect((await claim()).size).toBe(0);
    await expectExact();
  });
});

describe("fan-out", () => {
  it("enqueues the children and the join with the success, once, and what waited for the parent waits for the join", async () => {
    const { id } = await enqueueWorkflow(h.db, { name: "order", ref: null, onFailure: "cancel", steps: [step("lines"), step("ship", ["lines"])] });
    const lines = (await claim()).get("lines")!;
    const spawn: Spawn = {
      steps: [1, 2, 3].map((n) => ({ step: `line-${n}`, kind: "simulate", payload: { n }, dependsOn: [] })),
      join: { step: "packed", kind: "simulate", payload: {} },
    };
    const first = report(lines, "success", { result: { lines: 3 }, spawn });
    // Delivered twice, in one batch and again later: one fan-out.
    await applyStatusUpdates(h.db, [report(lines, "processing"), first, first], opts);
    await applyStatusUpdates(h.db, [first], opts);
    expect(await statuses(id)).toEqual({
      lines: "success",
      ship: "blocked",
      "lines/line-1": "pending",
      "lines/line-2": "pending",
      "lines/line-3": "pending",
      "lines/packed": "blocked",
    });
    await expectExact();
    const children = await claim();
    expect(children.size).toBe(3);
    for (const c of children.values()) await finish(c, "success");
    const packed = (await claim()).get("lines/packed")!;
    expect(Object.keys(packed.deps!).sort()).toEqual(["lines/line-1", "lines/line-2", "lines/line-3"]);
    expect(await statuses(id)).toMatchObject({ ship: "blocked" });
    await finish(packed, "success");
    const ship = (await claim()).get("ship")!;
    expect(Object.keys(ship.deps!).sort()).toEqual(["lines", "lines/packed"]);
    await finish(ship, "success");
    expect((await getWorkflow(h.db, id))!.status).toBe("success");
    await expectExact();
  });
});

describe("fan-out names at the limit", () => {
  it("a spawned step's stored name may be 200 characters (<parent>/<child>); 201 ends the parent as a permanent error saying why", async () => {
    const spawnOne = { steps: [{ step: "c".repeat(100), kind: "simulate", payload: {}, dependsOn: [] }] };
    const { id } = await enqueueWorkflow(h.db, { name: "order", ref: null, onFailure: "cancel", steps: [step("p".repeat(99)), step("q".repeat(100))] });
    const ready = await claim();
    await applyStatusUpdates(h.db, [report(ready.get("p".repeat(99))!, "processing"), report(ready.get("p".repeat(99))!, "success", { spawn: spawnOne })], opts);
    await applyStatusUpdates(h.db, [report(ready.get("q".repeat(100))!, "processing"), report(ready.get("q".repeat(100))!, "success", { spawn: spawnOne })], opts);
    const s = await statuses(id);
    expect(s[`${"p".repeat(99)}/${"c".repeat(100)}`]).toBe("pending");
    expect(s["q".repeat(100)]).toBe("error");
    const q = await h.db.selectFrom("units").select("last_error").where("step", "=", "q".repeat(100)).executeTakeFirstOrThrow();
    expect(q.last_error).toMatch(/longer than 200 characters/);
    await expectExact();
  });
});

describe("retention", () => {
  const prune = () => h.db.transaction().execute((trx) => pruneBatch(trx, { retentionMs: 1_000, limit: 1_000, by: "test" }));
  const age = () => sql`UPDATE units SET updated_at = now() - interval '1 hour'; UPDATE workflows SET finished_at = now() - interval '1 hour' WHERE finished_at IS NOT NULL`.execute(h.db);

  it("keeps the steps of a running workflow and a result a dependent still needs; prunes a finished workflow whole", async () => {
    const { id } = await order();
    await finish((await claim()).get("validate")!, "success");
    await age();
    // validate finished long ago, but its workflow runs (and charge, reserve wait to be dispatched with its result).
    expect((await prune()).units).toBe(0);
    const ready = await claim();
    expect(ready.get("charge")!.deps).toEqual({ validate: { done: expect.any(Number) } });
    for (const u of ready.values()) await finish(u, "success");
    await finish((await claim()).get("ship")!, "success");
    await finish((await claim()).get("notify")!, "success");
    expect((await getWorkflow(h.db, id))!.status).toBe("success");
    await age();
    expect((await prune()).units).toBe(5);
    expect(await getWorkflow(h.db, id)).toBeNull();
    expect((await sql<{ n: number }>`SELECT count(*)::int AS n FROM unit_deps`.execute(h.db)).rows[0]!.n).toBe(0);
    await expectExact();
  });

  it("keeps a finished unit outside workflows while a unit that waits for it is not finished", async () => {
    const [a] = await enqueueUnits(h.db, [{ kind: "simulate", group: "g", priority: 0, payload: {}, ref: "a", maxAttempts: 1 }]);
    const [b] = await enqueueUnits(h.db, [{ kind: "simulate", group: "g", priority: 0, payload: {}, ref: null, maxAttempts: 1, dependencies: 1, delayMs: 3_600_000 }]);
    await addDependencies(h.db, [{ unitId: b!.id, dependsOn: a!.id, onFailure: "cancel" }]);
    await finish((await claim()).get(String(a!.id))!, "success");
    await age();
    expect((await prune()).units).toBe(0);
    // Ready but delayed by an hour: it will be dispatched with a's result, which is still there.
    const row = await h.db.selectFrom("units").select(["status", "not_before"]).where("id", "=", b!.id).executeTakeFirstOrThrow();
    expect(row.status).toBe("pending");
    expect(row.not_before).not.toBeNull();
    await expectExact();
  });
});
