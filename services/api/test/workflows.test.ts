import { beforeAll, describe, expect, it } from "vitest";
import type { ApiService } from "@rtb/api";
import { checkWorkflows, countByStatus, type DbHandle } from "@rtb/db";
import { MAX_WORKFLOW_STEPS } from "@rtb/protocol";
import { openTestDb, useTestPlace } from "@rtb/testing";
import { call, startApi } from "./support.ts";

// The api alone (no leader, no agents): POST /workflows and what it refuses, GET /workflows
// and /workflows/:id, cancelling a workflow. Running workflows through agents is
// test/system/workflows.test.ts.
const place = useTestPlace({ kinds: ["validate", "charge", "reserve", "ship", "notify", "line"] });
let api: ApiService;
let db: DbHandle;

beforeAll(async () => {
  api = place.own(await startApi(place, { RTB_SEED_UNITS: "0", RTB_MAX_ATTEMPTS: "2" }));
  db = place.own(openTestDb(place));
});

const post = (path: string, body?: unknown) => call(api, path, "POST", body);
const total = async () => Object.values(await countByStatus(db.db)).reduce((a, b) => a + b, 0);

const orderSteps = () => [
  { step: "validate", kind: "validate", payload: { order: 1 } },
  { step: "charge", kind: "charge", dependsOn: ["validate"] },
  { step: "reserve", kind: "reserve", dependsOn: ["validate"] },
  { step: "ship", kind: "ship", dependsOn: ["charge", { step: "reserve", onFailure: "ignore" }] },
  { step: "notify", kind: "notify", dependsOn: ["ship"] },
];

async function expectRejected(body: unknown, field: string, message: RegExp) {
  const before = await total();
  const res = await post("/workflows", body);
  expect(res.status, JSON.stringify(res.body)).toBe(400);
  expect(res.body).toMatchObject({ error: "invalid_request", field });
  expect(res.body.message).toMatch(message);
  expect(await total()).toBe(before);
}

describe("POST /workflows", () => {
  it("enqueues every step in one request: roots pending, the rest blocked, edges and policies as sent", async () => {
    const res = await post("/workflows", { name: "order", ref: "order-1", steps: orderSteps() });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    const wf = res.body.workflow;
    expect(wf).toMatchObject({ name: "order", ref: "order-1", status: "running", onFailure: "cancel", counts: { pending: 1, blocked: 4 } });
    const byName = Object.fromEntries(wf.steps.map((s: any) => [s.step, s]));
    expect(byName.validate).toMatchObject({ status: "pending", dependsOn: [], waitingOn: null });
    expect(byName.ship.status).toBe("blocked");
    expect(byName.ship.waitingOn).toBe(2);
    expect(byName.ship.dependsOn).toEqual([
      { step: "charge", unitId: byName.charge.id, onFailure: "cancel", satisfied: false },
      { step: "reserve", unitId: byName.reserve.id, onFailure: "ignore", satisfied: false },
    ]);
    // Each step is a unit: GET /units/:id knows its workflow.
    const unit = await call(api, `/units/${byName.ship.id}`);
    expect(unit.body).toMatchObject({ status: "blocked", workflow: { id: wf.id, step: "ship" }, waitingOn: 2 });
    // Blocked is counted in GET /, and is not done.
    const state = await call(api, "/");
    expect(state.body.counts.blocked).toBe(4);
    expect(state.body.done).toBe(false);
    // Blocked steps are not in the preview of the dispatch order.
    const next = await call(api, "/next?limit=100");
    expect(next.body.units.map((u: any) => u.id)).toEqual([byName.validate.id]);
    expect(await checkWorkflows(db.db)).toEqual([]);
  });

  it("the same ref again returns the existing workflow (200, created: false) and writes nothing", async () => {
    const before = await total();
    const res = await post("/workflows", { name: "order", ref: "order-1", steps: orderSteps().slice(0, 1) });
    expect(res.status).toBe(200);
    expect(res.body.created).toBe(false);
    expect(res.body.workflow.steps).toHaveLength(5);
    expect(await total()).toBe(before);
  });

  it("refuses a cycle, an unknown step, a name used twice, a self-dependency and a bad policy, naming the field", async () => {
    await expectRejected(
      { name: "order", steps: [{ step: "a", kind: "line", dependsOn: ["c"] }, { step: "b", kind: "line", dependsOn: ["a"] }, { step: "c", kind: "line", dependsOn: ["b"] }] },
      "steps[0].dependsOn",
      /cycle: a -> c -> b -> a/,
    );
    await expectRejected({ name: "order", steps: [{ step: "a", kind: "line" }, { step: "b", kind: "line", dependsOn: ["nope"] }] }, "steps[1].dependsOn[0]", /no step named "nope"/);
    await expectRejected({ name: "order", steps: [{ step: "a", kind: "line" }, { step: "a", kind: "line" }] }, "steps[1].step", /named twice/);
    await expectRejected({ name: "order", steps: [{ step: "a", kind: "line", dependsOn: ["a"] }] }, "steps[0].dependsOn[0]", /itself/);
    await expectRejected({ name: "order", steps: [{ step: "a", kind: "line" }, { step: "b", kind: "line", dependsOn: [{ step: "a", onFailure: "maybe" }] }] }, "steps[1].dependsOn[0]", /step's name/);
    await expectRejected({ name: "order", onFailure: "later", steps: [{ step: "a", kind: "line" }] }, "onFailure", /cancel, fail or ignore/);
    await expectRejected({ name: "order", steps: [{ step: "a/b", kind: "line" }] }, "steps[0].step", /letters, digits/);
    await expectRejected({ name: "order", steps: [] }, "steps", /at least one step/);
  });

  it(`takes ${MAX_WORKFLOW_STEPS} steps (a fan-in of all but one) and refuses ${MAX_WORKFLOW_STEPS + 1}`, async () => {
    const steps = (n: number) => [
      ...Array.from({ length: n - 1 }, (_, i) => ({ step: `line-${i}`, kind: "line", payload: { i } })),
      { step: "join", kind: "line", dependsOn: Array.from({ length: n - 1 }, (_, i) => `line-${i}`) },
    ];
    await expectRejected({ name: "big", steps: steps(MAX_WORKFLOW_STEPS + 1) }, "steps", new RegExp(`at most ${MAX_WORKFLOW_STEPS} steps`));
    const res = await post("/workflows", { name: "big", steps: steps(MAX_WORKFLOW_STEPS) });
    expect(res.status).toBe(201);
    expect(res.body.workflow.steps).toHaveLength(MAX_WORKFLOW_STEPS);
    expect(res.body.workflow.counts).toEqual({ pending: MAX_WORKFLOW_STEPS - 1, blocked: 1 });
    const join = res.body.workflow.steps.at(-1);
    expect(join.waitingOn).toBe(MAX_WORKFLOW_STEPS - 1);
    expect(await checkWorkflows(db.db)).toEqual([]);
  });
});

describe("GET /workflows and cancelling one", () => {
  it("lists newest first with filters and pages; 404 for an unknown id; cancel ends every open step and the workflow", async () => {
    const a = (await post("/workflows", { name: "render", steps: [{ step: "only", kind: "line" }] })).body.workflow;
    const b = (await post("/workflows", { name: "render", steps: [{ step: "first", kind: "line" }, { step: "second", kind: "line", dependsOn: ["first"] }] })).body.workflow;
    const page = await call(api, "/workflows?name=render&limit=1");
    expect(page.status).toBe(200);
    expect(page.body.workflows.map((w: any) => w.id)).toEqual([b.id]);
    const rest = await call(api, `/workflows?name=render&after=${page.body.nextCursor}`);
    expect(rest.body.workflows.map((w: any) => w.id)).toEqual([a.id]);
    expect(rest.body.nextCursor).toBeNull();
    expect((await call(api, "/workflows?status=maybe")).body).toMatchObject({ field: "status" });
    expect((await call(api, "/workflows/999999")).status).toBe(404);

    const cancelled = await post(`/workflows/${b.id}/cancel`);
    expect(cancelled.status).toBe(200);
    expect(cancelled.body).toMatchObject({ cancelled: 2, inFlight: 0, workflow: { status: "cancelled", counts: { cancelled: 2 } } });
    expect((await call(api, "/workflows?status=cancelled")).body.workflows.map((w: any) => w.id)).toContain(b.id);
    expect((await call(api, `/workflows?status=running&name=render`)).body.workflows.map((w: any) => w.id)).toEqual([a.id]);
    expect(await checkWorkflows(db.db)).toEqual([]);
  });

  it("GET / and /metrics count the running workflows", async () => {
    const running = (await call(api, "/workflows?status=running&limit=1000")).body.workflows.length;
    expect(running).toBeGreaterThan(0);
    expect((await call(api, "/")).body.workflows).toEqual({ running });
    const res = await api.app.request("/metrics");
    expect(await res.text()).toMatch(new RegExp(`^rtb_workflows_running(\\{[^}]*\\})? ${running}$`, "m"));
  });
});

describe("POST /units with dependsOn (units outside workflows)", () => {
  it("waits for units by ref (an earlier entry of the batch) or id; a dependency's end settles it by its policy", async () => {
    const res = await post("/units", [
      { kind: "line", ref: "dep-a" },
      { kind: "line", ref: "dep-b", dependsOn: ["dep-a"], onFailure: "ignore" },
      { kind: "line", ref: "dep-c", dependsOn: ["dep-a"] },
    ]);
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    const [a, b, c] = res.body.units;
    expect([a.status, b.status, c.status]).toEqual(["pending", "blocked", "blocked"]);
    const d = await post("/units", { kind: "line", dependsOn: [b.id, "dep-c"] });
    expect(d.body.unit).toMatchObject({ status: "blocked", waitingOn: 2 });
    // a ends cancelled: b (ignore) is ready, c (cancel) is closed, and so is d (c failed it).
    expect((await post(`/units/${a.id}/cancel`)).status).toBe(200);
    expect((await call(api, `/units/${b.id}`)).body.status).toBe("pending");
    const closed = (await call(api, `/units/${c.id}`)).body;
    expect(closed).toMatchObject({ status: "cancelled", lastError: `dependency dep-a (unit ${a.id}) ended in cancelled` });
    expect(closed.events.at(-1)).toMatchObject({ status: "cancelled", source: "workflow", detail: { reason: "dependency_failed", dependency: a.id } });
    expect((await call(api, `/units/${d.body.unit.id}`)).body.status).toBe("cancelled");
    expect(await checkWorkflows(db.db)).toEqual([]);
  });

  it("refuses a dependency that names no unit, or a later entry, naming the field, and writes nothing", async () => {
    const before = await total();
    const unknown = await post("/units", [{ kind: "line" }, { kind: "line", dependsOn: ["no-such-ref"] }]);
    expect(unknown.status).toBe(400);
    expect(unknown.body).toMatchObject({ field: "[1].dependsOn[0]", message: 'no unit with ref "no-such-ref"' });
    const missingId = await post("/units", { kind: "line", dependsOn: [987654321] });
    expect(missingId.body).toMatchObject({ field: "dependsOn[0]", message: "no unit with id 987654321" });
    const forward = await post("/units", [{ kind: "line", ref: "first", dependsOn: ["second"] }, { kind: "line", ref: "second" }]);
    expect(forward.body).toMatchObject({ field: "[0].dependsOn[0]" });
    expect(forward.body.message).toMatch(/later one/);
    const policyAlone = await post("/units", { kind: "line", onFailure: "ignore" });
    expect(policyAlone.body).toMatchObject({ field: "onFailure" });
    expect(await total()).toBe(before);
  });
});

describe("limits, at the maximum and one past", () => {
  it("a step's name: 100 characters are taken, 101 refused naming the field", async () => {
    const ok = await post("/workflows", { name: "names", steps: [{ step: "s".repeat(100), kind: "line" }] });
    expect(ok.status).toBe(201);
    expect(ok.body.workflow.steps[0].step).toHaveLength(100);
    await expectRejected({ name: "names", steps: [{ step: "s".repeat(101), kind: "line" }] }, "steps[0].step", /1 to 100/);
  });

  it(`POST /units dependsOn: ${MAX_WORKFLOW_STEPS} dependencies are taken, ${MAX_WORKFLOW_STEPS + 1} refused naming the field`, async () => {
    const deps = (await post("/units", Array.from({ length: MAX_WORKFLOW_STEPS }, () => ({ kind: "line" })))).body.units.map((u: any) => u.id);
    const before = await total();
    const tooMany = await post("/units", { kind: "line", dependsOn: [...deps, deps[0]] });
    expect(tooMany.status).toBe(400);
    expect(tooMany.body).toMatchObject({ field: "dependsOn" });
    expect(tooMany.body.message).toMatch(new RegExp(`at most ${MAX_WORKFLOW_STEPS}`));
    expect(await total()).toBe(before);
    const res = await post("/units", { kind: "line", dependsOn: deps });
    expect(res.status).toBe(201);
    expect(res.body.unit).toMatchObject({ status: "blocked", waitingOn: MAX_WORKFLOW_STEPS });
    expect(await checkWorkflows(db.db)).toEqual([]);
  });
});
