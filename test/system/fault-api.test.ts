import { describe, expect, it } from "vitest";
import { clusterPerTest, expectSettled, midRunEnv, startAllAndGo, faultTestTimeout, waitFor, type Cluster } from "@rtb/testing";

/** The api dying or stopping mid-run, as a real process: reports wait in the broker, nothing is lost. */
const run = clusterPerTest();

const env = midRunEnv;

async function startAll(c: Cluster) {
  expect(await startAllAndGo(c)).toMatchObject({ dispatching: true, changed: true });
  await c.waitState("the run to be under way", (s) => s.counts.success >= 30 && s.counts.pending > 0);
}

describe("the api", () => {
  it("kill -9 mid-run, then a restart: the inbox waited in the broker, top-ups resume without /go, nothing lost, never over the bound", async () => {
    const c = await run.start(env);
    await startAll(c);
    // Delayed units that fall due while the api is down: the restarted api's timer, armed
    // from the database, dispatches them.
    await c.enqueue(Array.from({ length: 20 }, (_, i) => ({ kind: "simulate", delayMs: 500 + i * 100 })));
    expect(await c.kill("api", "SIGKILL")).toEqual({ code: null, signal: "SIGKILL" });

    // While the api is down, the agents work off what was routed and their reports wait in the inbox.
    await waitFor("status reports to wait in the inbox", async () => (await c.depth(run.place.topology.inbox)) > 0, 30_000, 100);
    await waitFor("the routed jobs to be worked off", async () => (await c.depth(run.place.topology.jobQueue("simulate"))) === 0, 30_000, 100);
    const waiting = await c.depth(run.place.topology.inbox);
    expect(waiting).toBeGreaterThan(0);

    await c.restart("api");
    // Dispatching was on in PostgreSQL: the new api resumes by itself (nobody calls /go again).
    const resumed = await c.get("/");
    expect(resumed).toMatchObject({ dispatching: true, total: 320 });
    await waitFor("the waiting reports to be applied", async () => (await c.depth(run.place.topology.inbox)) === 0, 30_000, 100);
    expect((await c.get("/")).reports.applied).toBeGreaterThan(0);

    await expectSettled(c);
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
    expect(await c.get("/")).toMatchObject({ dispatching: true, total: 300 });
    await expectSettled(c);
    expect(c.proc("api").output()).not.toContain("dispatching turned on");
  }, faultTestTimeout);
});
