import { describe, expect, it } from "vitest";
import { clusterPerTest, expectSettled, midRunEnv, startAllAndGo, faultTestTimeout, waitFor, type Cluster } from "@rtb/testing";

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
  it("kill -9 mid-run, then a restart: the inbox waited in the broker, top-ups resume without /go, nothing lost, never over the bound", async () => {
    const c = await run.start(env);
    await startAll(c);
    // Delayed units that fall due while the api is down: the restarted api's timer, armed
    // from the database, dispatches them. A schedule firing every second across the kill. And
    // delayed units cancelled by group just before it.
    await c.enqueue(Array.from({ length: 20 }, (_, i) => ({ kind: "simulate", delayMs: 500 + i * 100 })));
    expect((await c.post("/schedules", { name: "tick", cron: "* * * * * *", unit: { kind: "simulate", group: "scheduled" } })).status).toBe(201);
    await c.enqueue(Array.from({ length: 10 }, () => ({ kind: "simulate", group: "to-cancel", delayMs: 60_000 })));
    expect((await c.post("/units/cancel", { group: "to-cancel" })).body).toEqual({ cancelled: 10, inFlight: 0 });
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await c.kill("api", "SIGKILL")).toEqual({ code: null, signal: "SIGKILL" });

    // While the api is down, the agents work off what was routed and their reports wait in the inbox.
    await waitFor("status reports to wait in the inbox", async () => (await c.depth(run.place.topology.inbox)) > 0, 30_000, 100);
    await waitFor("the routed jobs to be worked off", async () => (await c.depth(run.place.topology.jobQueue("simulate"))) === 0, 30_000, 100);
    const waiting = await c.depth(run.place.topology.inbox);
    expect(waiting).toBeGreaterThan(0);

    await c.restart("api");
    // Dispatching was on in PostgreSQL: the new api resumes by itself (nobody calls /go again).
    const resumed = await c.get("/");
    expect(resumed.dispatching).toBe(true);
    // An empty inbox means delivered, not yet applied: the batches that carry them commit a little later.
    await waitFor("the waiting reports to be delivered", async () => (await c.depth(run.place.topology.inbox)) === 0, 30_000, 100);
    await waitFor("the waiting reports to be applied", async () => (await c.get("/")).reports.applied > 0, 30_000, 100);
    expect((await c.get("/")).reports.applied).toBeGreaterThan(0);

    // The schedule caught up, then paused: one unit for every occurrence since it was made,
    // those that fell due while no api ran included (they were within RTB_SCHEDULE_GRACE_MS).
    await waitFor("the schedule to catch up", async () => {
      const sc = await c.get("/schedules/tick");
      return sc.lastFired !== null && Date.now() - Date.parse(sc.lastFired.occurrence) < 2_000;
    }, 30_000, 200);
    expect((await c.post("/schedules/tick/pause")).status).toBe(200);
    const tick = await c.get("/schedules/tick");
    const occurrences = Math.floor(Date.parse(tick.lastFired.occurrence) / 1000) - Math.floor(Date.parse(tick.createdAt) / 1000);
    expect(tick).toMatchObject({ fired: occurrences, skipped: 0 });
    expect(occurrences).toBeGreaterThan(1);
    c.expectUnits(tick.fired);

    await expectSettled(c, undefined, { cancelled: 10 });
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
