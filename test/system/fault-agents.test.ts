import { describe, expect, it } from "vitest";
import {
  checkInputs,
  clusterPerTest,
  expectedOutcome,
  expectSettled,
  faultTestTimeout,
  finishedBy,
  ORDER_SHAPES,
  orderWorkflow,
  SHAPE_INFO,
  shapeOutcome,
  unitsHeldBy,
  waitFor,
  workflowStatuses,
  type OrderShape,
  type WorkflowSnapshot,
} from "@rtb/testing";

/** Agents dying or stopping with jobs in hand, as real processes: no unit is lost. */
const run = clusterPerTest();

describe("an agent that dies", () => {
  it("kill -9 while it holds units, workflow steps among them: its unacked jobs go to the other agent and finish; nothing stays processing, every workflow ends as it should", async () => {
    const c = await run.start({ RTB_SEED_UNITS: "300", RTB_AGENT_CONCURRENCY: "4" });
    await c.start("api");
    await c.start("leader-1");
    // agent-1 is slow, so it always has units in hand; agent-2 is quick.
    await c.start("agent-1", { RTB_AGENT_WORK_MIN_MS: "200", RTB_AGENT_WORK_MAX_MS: "400" });
    await c.start("agent-2");
    // Workflows of every shape, four of each, beside the seeded units (a group of their own: dispatch shares between the two).
    const workflows: { id: number; shape: OrderShape }[] = [];
    for (let i = 0; i < 4; i++) {
      for (const shape of ORDER_SHAPES) {
        const res = await c.post("/workflows", orderWorkflow(shape, { maxAttempts: 10 }));
        expect(res.status, JSON.stringify(res.body)).toBe(201);
        workflows.push({ id: res.body.workflow.id, shape });
        c.expectUnits(SHAPE_INFO[shape].steps);
      }
    }
    expect(await c.get("/go")).toMatchObject({ dispatching: true, changed: true });

    // Mid-run, agent-1 has units in processing, a workflow step among them: its job is
    // redelivered to agent-2 (and run twice, when agent-1 had started it), and what waits for it
    // must be unblocked once, by whichever success is applied first.
    const holdsAStep = async () => {
      const held = await unitsHeldBy(c.db, "agent-1");
      if (held.length < 2 || (await c.get("/")).counts.success < 20) return false;
      const steps = await c.db.selectFrom("units").select("id").where("id", "in", held.map((u) => u.id)).where("workflow_id", "is not", null).execute();
      return steps.length > 0;
    };
    await waitFor("agent-1 to hold units, a workflow step among them, mid-run", holdsAStep, 30_000, 20);
    const held = await unitsHeldBy(c.db, "agent-1");
    expect(await c.kill("agent-1", "SIGKILL")).toEqual({ code: null, signal: "SIGKILL" });

    const closed = workflows.reduce((n, w) => n + SHAPE_INFO[w.shape].cancelled, 0);
    await expectSettled(c, undefined, { cancelled: closed });
    // Nothing is pruned here (retention is a week): the workflows are read whole, after the run.
    expect((await workflowStatuses(c.db)).running).toEqual([]);
    for (const w of workflows) {
      const wf = (await c.get(`/workflows/${w.id}`)) as WorkflowSnapshot;
      expect({ shape: w.shape, ...shapeOutcome(wf) }).toEqual({ shape: w.shape, ...expectedOutcome(w.shape) });
    }
    const inputs = await checkInputs(c.db);
    expect(inputs.mismatches).toEqual([]);
    expect(inputs.withPruned).toBe(0);
    // What agent-1 held was redelivered by the broker and finished by agent-2, not repaired by
    // the reconciler (a unit whose result agent-1 had reported just before it died keeps agent-1's name).
    const by = await finishedBy(c.db, held);
    expect(new Set(by.keys())).toEqual(new Set(held.map((u) => u.id)));
    const sources = [...by.values()];
    expect(sources.every((s) => s === "agent:agent-1" || s === "agent:agent-2")).toBe(true);
    expect(sources.filter((s) => s === "agent:agent-2").length).toBeGreaterThan(0);
  }, faultTestTimeout);
});

describe("an agent stopped with SIGTERM", () => {
  it("finishes the jobs in hand, exits 0 within RTB_SHUTDOWN_TIMEOUT_MS, and the run completes", async () => {
    const c = await run.start({ RTB_SEED_UNITS: "200", RTB_SHUTDOWN_TIMEOUT_MS: "5000" });
    await c.start("api");
    await c.start("leader-1");
    // agent-1's jobs take well under the time it has to finish them on SIGTERM (4 s of 5 s).
    await c.start("agent-1", { RTB_AGENT_WORK_MIN_MS: "500", RTB_AGENT_WORK_MAX_MS: "1000" });
    await c.start("agent-2");
    await c.get("/go");

    await waitFor("agent-1 to hold units", async () => (await unitsHeldBy(c.db, "agent-1")).length >= 2, 30_000);
    const held = await unitsHeldBy(c.db, "agent-1");
    // Exit code 0 (not 1): it stopped before the lifecycle's hard deadline (timeout + 2 s).
    expect(await c.kill("agent-1", "SIGTERM", 5_000 + 15_000)).toEqual({ code: 0, signal: null });
    expect(c.output("agent-1")).toContain('"msg":"stopped"');

    await expectSettled(c);
    // agent-1 finished what it held before exiting.
    const by = await finishedBy(c.db, held);
    expect([...by.values()]).toEqual(held.map(() => "agent:agent-1"));
  }, faultTestTimeout);

  it("hands back jobs that cannot finish before the deadline; another agent finishes them", async () => {
    const c = await run.start({ RTB_SEED_UNITS: "200", RTB_SHUTDOWN_TIMEOUT_MS: "2000" });
    await c.start("api");
    await c.start("leader-1");
    // agent-1's jobs would take far longer than its shutdown allows.
    await c.start("agent-1", { RTB_AGENT_WORK_MIN_MS: "20000", RTB_AGENT_WORK_MAX_MS: "20000" });
    await c.start("agent-2");
    await c.get("/go");

    await waitFor("agent-1 to hold its 4 jobs", async () => (await unitsHeldBy(c.db, "agent-1")).length === 4, 30_000);
    const held = await unitsHeldBy(c.db, "agent-1");
    expect(await c.kill("agent-1", "SIGTERM", 2_000 + 15_000)).toEqual({ code: 0, signal: null });

    await expectSettled(c);
    // No error was recorded for the cut-short attempts: they were handed back and agent-2 finished them.
    const by = await finishedBy(c.db, held);
    expect([...by.values()]).toEqual(held.map(() => "agent:agent-2"));
  }, faultTestTimeout);
});
