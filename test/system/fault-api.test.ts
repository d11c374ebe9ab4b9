import { sql } from "kysely";
import { describe, expect, it } from "vitest";
import {
  awaitWorkflowsEnded,
  catchUpAndPause,
  checkInputs,
  clusterPerTest,
  expectedOutcome,
  expectSettled,
  faultTestTimeout,
  midRunEnv,
  ORDER_SHAPES,
  orderWorkflow,
  SHAPE_INFO,
  shapeOutcome,
  startAllAndGo,
  waitFor,
  workflowStatuses,
  type Cluster,
} from "@rtb/testing";

/** The api dying or stopping mid-run, as a real process: reports wait in the broker, nothing is lost. */
const run = clusterPerTest();

// Finished units are pruned while the api dies and comes back, so the checks hold with pruning
// in the mix (the other fault tests read units' timelines after the run, and keep them).
const env = { ...midRunEnv, RTB_RETENTION: "2s" };

async function startAll(c: Cluster) {
  expect(await startAllAndGo(c)).toMatchObject({ dispatching: true, changed: true });
  await c.waitState("the run to be under way", (s) => s.counts.success >= 30 && s.counts.pending > 0);
}

describe("the api", () => {
  it("kill -9 mid-run, then a restart: the inbox waited in the broker, top-ups resume without /go, nothing lost, never over the bound; workflows killed between a dependency's success and their dependents' dispatch finish", async () => {
    const c = await run.start(env);
    await startAll(c);
    // Workflows of every shape (order-workflows in test/support/workflow-runs.ts), killed
    // between their first step's success and the dispatch of what it unblocked: validate runs
    // first (priority 1), and the steps after it, made ready by its success, wait behind the
    // backlog (priority -1) while the api dies. 100 more units keep the backlog long enough.
    const workflows: { id: number; shape: (typeof ORDER_SHAPES)[number] }[] = [];
    for (const shape of ORDER_SHAPES) {
      const res = await c.post("/workflows", orderWorkflow(shape, { priority: 1, laterPriority: -1, maxAttempts: 10 }));
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      workflows.push({ id: res.body.workflow.id, shape });
      c.expectUnits(SHAPE_INFO[shape].steps);
    }
    await c.enqueue(Array.from({ length: 100 }, () => ({ kind: "simulate" })));
    // Delayed units that fall due while the api is down: the restarted api's timer, armed
    // from the database, dispatches them. A schedule firing every second across the kill. And
    // delayed units cancelled by group just before it.
    await c.enqueue(Array.from({ length: 20 }, (_, i) => ({ kind: "simulate", delayMs: 500 + i * 100 })));
    expect((await c.post("/schedules", { name: "tick", cron: "* * * * * *", unit: { kind: "simulate", group: "scheduled" } })).status).toBe(201);
    await c.enqueue(Array.from({ length: 10 }, () => ({ kind: "simulate", group: "to-cancel", delayMs: 60_000 })));
    expect((await c.post("/units/cancel", { group: "to-cancel" })).body).toEqual({ cancelled: 10, inFlight: 0 });
    await new Promise((r) => setTimeout(r, 1_500));
    // Every validate succeeded, and charge and reserve were made ready in its transaction.
    const unblocked = () => sql<{ id: number }>`
      SELECT u.id FROM units u
      WHERE u.workflow_id = ANY(${workflows.map((w) => w.id)}::bigint[]) AND u.step IN ('charge', 'reserve') AND u.status = 'pending'
        AND EXISTS (SELECT FROM unit_events e WHERE e.unit_id = u.id AND e.detail->>'action' = 'unblocked')
        AND NOT EXISTS (SELECT FROM unit_events e WHERE e.unit_id = u.id AND e.status = 'dispatched')`.execute(c.db);
    await waitFor("every workflow's validate to succeed, and what it unblocked to wait for its dispatch", async () => (await unblocked()).rows.length === 2 * workflows.length, 20_000, 50);
    expect(await c.kill("api", "SIGKILL")).toEqual({ code: null, signal: "SIGKILL" });
    // Killed in the window: the dependencies' successes committed, the dependents not dispatched.
    expect((await unblocked()).rows).toHaveLength(2 * workflows.length);

    // While the api is down, the agents work off what was routed and their reports wait in the inbox.
    await waitFor("status reports to wait in the inbox", async () => (await c.depth(run.place.topology.inbox)) > 0, 30_000, 100);
    await waitFor("the routed jobs to be worked off", async () => (await c.depth(run.place.topology.jobQueue("simulate"))) === 0, 30_000, 100);
    const waiting = await c.depth(run.place.topology.inbox);
    expect(waiting).toBeGreaterThan(0);

    await c.restart("api");
    // Watched from now on (retention removes a finished workflow's early steps at once).
    const watching = awaitWorkflowsEnded(c.get, workflows.map((w) => w.id));
    watching.catch(() => {}); // awaited below
    // Dispatching was on in PostgreSQL: the new api resumes by itself (nobody calls /go again).
    const resumed = await c.get("/");
    expect(resumed.dispatching).toBe(true);
    // An empty inbox means delivered, not yet applied: the batches that carry them commit a little later.
    await waitFor("the waiting reports to be delivered", async () => (await c.depth(run.place.topology.inbox)) === 0, 30_000, 100);
    await waitFor("the waiting reports to be applied", async () => (await c.get("/")).reports.applied > 0, 30_000, 100);
    expect((await c.get("/")).reports.applied).toBeGreaterThan(0);

    // The schedule caught up, then paused: one unit for every occurrence since it was made,
    // those that fell due while no api ran included (they were within RTB_SCHEDULE_GRACE_MS).
    const { schedule: tick, occurrences } = await catchUpAndPause(c, "tick");
    expect(tick).toMatchObject({ fired: occurrences, skipped: 0 });
    expect(occurrences).toBeGreaterThan(1);

    // Each workflow ended as its shape says, every step handed exactly the results of its
    // dependencies that succeeded (as seen while it ran and ended: the test prunes after 2 s).
    const ended = await watching;
    for (const w of workflows) expect({ shape: w.shape, ...shapeOutcome(ended.get(w.id)!) }).toEqual({ shape: w.shape, ...expectedOutcome(w.shape) });

    const closed = workflows.reduce((n, w) => n + SHAPE_INFO[w.shape].cancelled, 0);
    await expectSettled(c, undefined, { cancelled: 10 + closed });
    expect((await workflowStatuses(c.db)).running).toEqual([]);
    expect((await checkInputs(c.db)).mismatches).toEqual([]);
    expect(c.proc("api").output()).not.toContain("dispatching turned on");
    // The restart did not seed again.
    expect(c.proc("api").output()).not.toContain("seeded it");
  }, faultTestTimeout);

  it("SIGTERM mid-run: exits 0 within RTB_SHUTDOWN_TIMEOUT_MS; after a restart the run completes with nothing lost", async () => {
    const c = await run.start(env);
    await startAll(c);
    const shutdownMs = Number(c.env.RTB_SHUTDOWN_TIMEOUT_MS);
    expect(await c.kill("api", "SIGTERM", shutdownMs + 15_000)).toEqual({ code: 0, signal: null });
    expect(c.output("api")).toContain('"msg":"stopped"');
    expect(c.output("api")).not.toContain("did not finish in time");

    await c.restart("api");
    // Every unit is there, or was pruned (RTB_RETENTION is short in the fault tests).
    const resumed = await c.get("/");
    expect(resumed.dispatching).toBe(true);
    expect(resumed.total + resumed.retention.pruned.units).toBe(300);
    await expectSettled(c);
    expect(c.proc("api").output()).not.toContain("dispatching turned on");
  }, faultTestTimeout);
});
