import { afterEach, describe, expect, it } from "vitest";
import { checkSystem, loadApiConfig } from "@rtb/api";
import { PermanentJobError, type Handler } from "@rtb/agent";
import { getWorkflow } from "@rtb/db";
import { MAX_WORKFLOW_STEPS } from "@rtb/protocol";
import { startSystem, useTestPlace, waitFor, type System } from "@rtb/testing";

/**
 * Workflows on a whole system (api, leader, agents): the order example from enqueue to the
 * finished tree, results handed on by step name, a failure policy and the retry that re-opens
 * what it closed, a fan-out at run time of the most steps one may spawn with its join, and a
 * workflow cancelled mid-run. Each run ends with the product's checker finding no broken rule.
 */

/** Charges fail permanently on their first attempt when the payload says so (the retry succeeds). */
const declinedOnce = new Set<number>();
const handlers = new Map<string, Handler>([
  ["validate", async ({ payload }) => ({ valid: true, total: (payload as { total: number }).total })],
  [
    "charge",
    async ({ unitId, payload, deps }) => {
      if ((payload as { decline?: boolean }).decline && !declinedOnce.has(unitId)) {
        declinedOnce.add(unitId);
        throw new PermanentJobError("card declined");
      }
      return { charged: (deps.validate as { total: number }).total };
    },
  ],
  ["reserve", async () => ({ reserved: true })],
  ["ship", async ({ deps }) => ({ shipped: true, saw: deps })],
  ["notify", async ({ deps }) => ({ notified: Object.keys(deps) })],
  [
    "lines",
    async ({ payload, spawn }) => {
      const n = (payload as { lines: number }).lines;
      spawn({
        steps: Array.from({ length: n }, (_, i) => ({ step: `line-${i}`, kind: "line", payload: { i } })),
        join: { step: "packed", kind: "pack", payload: {} },
      });
      return { lines: n };
    },
  ],
  ["line", async ({ payload }) => (payload as { i: number }).i],
  ["pack", async ({ deps }) => ({ count: Object.keys(deps).length, sum: Object.values(deps).reduce((a: number, b) => a + (b as number), 0) })],
  ["big", async () => "x".repeat(40_000)],
  // Long enough that its processing and success reports reach the api in separate batches.
  ["step", () => new Promise((resolve) => setTimeout(() => resolve({ stepped: true }), 150))],
  ["slow", ({ signal }) => new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason)))],
]);

const order = (total: number, extra: { decline?: boolean } = {}) => ({
  name: "order",
  steps: [
    { step: "validate", kind: "validate", payload: { total } },
    { step: "charge", kind: "charge", payload: extra, dependsOn: ["validate"] },
    { step: "reserve", kind: "reserve", dependsOn: ["validate"] },
    { step: "ship", kind: "ship", dependsOn: ["charge", "reserve"] },
    { step: "notify", kind: "notify", dependsOn: ["ship"] },
  ],
});

describe("workflows on an in-process system", () => {
  const place = useTestPlace({ kinds: [...handlers.keys()] });
  let system: System | undefined;
  afterEach(async () => {
    await system?.stop();
    system = undefined;
  });
  const env = { RTB_SEED_UNITS: "0", RTB_BROADCAST_MAX_QUEUE: "200", RTB_AGENT_CONCURRENCY: "16", RTB_MAX_ATTEMPTS: "3" };
  const post = async (path: string, body?: unknown) => {
    const res = await system!.api.app.request(path, { method: "POST", ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { "content-type": "application/json" } }) });
    return { status: res.status, body: (await res.json()) as any };
  };
  const workflow = (id: number) => getWorkflow(system!.api.database.db, id);
  const ended = (id: number, status: string, ms = 30_000) =>
    waitFor(`workflow ${id} ${status}`, async () => (await workflow(id))?.status === status, ms);
  async function expectChecked() {
    await waitFor("every unit finished", async () => (await system!.get("/")).done, 30_000);
    const config = loadApiConfig({ ...place.env, ...env });
    const report = await checkSystem({
      db: system!.api.database.db,
      broker: system!.api.broker,
      maxQueue: config.RTB_BROADCAST_MAX_QUEUE,
      dispatchTimeoutMs: config.RTB_DISPATCH_TIMEOUT_MS,
      processingTimeoutMs: config.RTB_PROCESSING_TIMEOUT_MS,
      expectDone: true,
    });
    expect(report.violations).toEqual([]);
  }

  it("runs the order example through, each step handed its dependencies' results by step name", async () => {
    // No reconciler pass (its tick also tops the outbox up): each step must be dispatched
    // because its dependency's success woke the dispatcher, or the run would stall.
    system = await startSystem(place, { ...env, RTB_RECONCILE_CRON: "0 0 1 1 *" }, { agents: 2, handlers });
    await system.get("/go");
    const ids: number[] = [];
    for (let i = 1; i <= 20; i++) ids.push((await post("/workflows", order(i * 10))).body.workflow.id);
    for (const id of ids) await ended(id, "success");
    const wf = (await workflow(ids[4]!))!;
    const step = (name: string) => wf.steps.find((s) => s.step === name)!;
    expect(step("charge").result).toEqual({ charged: 50 });
    expect(step("ship").result).toEqual({ shipped: true, saw: { charge: { charged: 50 }, reserve: { reserved: true } } });
    expect(step("notify").result).toEqual({ notified: ["ship"] });
    await expectChecked();
  });

  it("a chain runs step after step with nothing else in flight: each success wakes the dispatcher for its dependent", async () => {
    system = await startSystem(place, { ...env, RTB_RECONCILE_CRON: "0 0 1 1 *" }, { agents: 1, handlers });
    await system.get("/go");
    const steps = Array.from({ length: 6 }, (_, i) => ({ step: `s${i}`, kind: "step", ...(i > 0 ? { dependsOn: [`s${i - 1}`] } : {}) }));
    const { id } = (await post("/workflows", { name: "chain", steps })).body.workflow;
    await ended(id, "success", 20_000);
    await expectChecked();
  });

  it("a declined charge cancels ship and notify, the workflow ends in error; retrying the charge re-opens them and it succeeds", async () => {
    system = await startSystem(place, env, { agents: 2, handlers });
    await system.get("/go");
    const { id } = (await post("/workflows", order(99, { decline: true }))).body.workflow;
    await ended(id, "error");
    const failed = (await workflow(id))!;
    const status = Object.fromEntries(failed.steps.map((s) => [s.step, s.status]));
    expect(status).toEqual({ validate: "success", charge: "error", reserve: "success", ship: "cancelled", notify: "cancelled" });
    const charge = failed.steps.find((s) => s.step === "charge")!;
    expect(failed.steps.find((s) => s.step === "ship")!.closedBy).toBe(charge.id);
    expect((await post(`/units/${charge.id}/retry`)).status).toBe(200);
    await ended(id, "success");
    expect((await workflow(id))!.steps.find((s) => s.step === "ship")!.result).toMatchObject({ saw: { charge: { charged: 99 } } });
    await expectChecked();
  });

  it(`fans out ${MAX_WORKFLOW_STEPS - 1} children and their join at run time, once; the join gets every result, and ship waits for it`, async () => {
    system = await startSystem(place, { ...env, RTB_BROADCAST_MAX_QUEUE: "2000", RTB_AGENT_CONCURRENCY: "64" }, { agents: 2, handlers });
    await system.get("/go");
    const n = MAX_WORKFLOW_STEPS - 1;
    const { id } = (
      await post("/workflows", {
        name: "order",
        steps: [
          { step: "lines", kind: "lines", payload: { lines: n } },
          { step: "ship", kind: "ship", dependsOn: ["lines"] },
        ],
      })
    ).body.workflow;
    await ended(id, "success", 180_000);
    const wf = (await workflow(id))!;
    expect(wf.steps).toHaveLength(n + 3);
    expect(wf.steps.find((s) => s.step === "lines/packed")!.result).toEqual({ count: n, sum: (n * (n - 1)) / 2 });
    const ship = wf.steps.find((s) => s.step === "ship")!;
    expect(Object.keys((ship.result as { saw: object }).saw).sort()).toEqual(["lines", "lines/packed"]);
    await expectChecked();
  }, 240_000);

  it("a fan-out past the most steps ends the spawning step as a permanent error naming the field, and cancels what waited", async () => {
    system = await startSystem(place, env, { agents: 1, handlers });
    await system.get("/go");
    const { id } = (
      await post("/workflows", {
        name: "order",
        steps: [
          { step: "lines", kind: "lines", payload: { lines: MAX_WORKFLOW_STEPS } },
          { step: "ship", kind: "ship", dependsOn: ["lines"] },
        ],
      })
    ).body.workflow;
    await ended(id, "error");
    const wf = (await workflow(id))!;
    expect(wf.steps.map((s) => [s.step, s.status])).toEqual([
      ["lines", "error"],
      ["ship", "cancelled"],
    ]);
    expect(wf.steps[0]!.lastError).toMatch(/^spawn.steps: expected at most 10000 steps with the join/);
    await expectChecked();
  });

  it("a join whose dependencies' results cannot fit one broker message ends as a permanent error saying so, and its dependents are closed", async () => {
    // 64 KiB messages: each 40,000-character result travels alone, the two together cannot.
    system = await startSystem(place, { ...env, RTB_BROKER_MAX_MESSAGE_BYTES: "65536" }, { agents: 1, handlers });
    await system.get("/go");
    const { id } = (
      await post("/workflows", {
        name: "order",
        steps: [
          { step: "a", kind: "big" },
          { step: "b", kind: "big" },
          { step: "join", kind: "pack", dependsOn: ["a", "b"] },
          { step: "after", kind: "notify", dependsOn: ["join"] },
        ],
      })
    ).body.workflow;
    await ended(id, "error");
    const steps = Object.fromEntries((await workflow(id))!.steps.map((s) => [s.step, s]));
    expect([steps.a!.status, steps.b!.status, steps.join!.status, steps.after!.status]).toEqual(["success", "success", "error", "cancelled"]);
    expect(steps.join!.lastError).toMatch(/^refused: its dispatch message \(\d+ bytes\) is larger than a message may be/);
    await expectChecked();
  });

  it("cancelling a workflow mid-run aborts its running step and cancels the blocked ones", async () => {
    system = await startSystem(place, env, { agents: 1, handlers });
    await system.get("/go");
    const { id } = (
      await post("/workflows", {
        name: "order",
        steps: [
          { step: "wait", kind: "slow" },
          { step: "after", kind: "ship", dependsOn: ["wait"] },
        ],
      })
    ).body.workflow;
    await waitFor("the slow step runs", async () => (await workflow(id))!.steps[0]!.status === "processing", 10_000);
    const res = await post(`/workflows/${id}/cancel`);
    expect(res.body).toMatchObject({ cancelled: 2, inFlight: 1, workflow: { status: "cancelled" } });
    await expectChecked();
  });
});
