import { sql } from "kysely";
import { describe, expect, it } from "vitest";
import { clusterPerTest, expectSettled, midRunEnv, startAllAndGo, faultTestTimeout, waitFor, type Cluster } from "@rtb/testing";

/** The leader dying or stopping mid-stream, as a real process: the run completes, nothing lost. */
const run = clusterPerTest();

const env = midRunEnv;

async function midStream(c: Cluster, leaderId: string) {
  return c.waitState(`${leaderId} to be routing, mid-run`, (s) => s.leader?.id === leaderId && s.counts.success >= 30 && s.counts.pending > 0);
}

describe("the leader", () => {
  it("kill -9 with a standby running: the standby takes over and the run completes", async () => {
    const c = await run.start(env);
    // leader-a subscribes first, so it is the outbox's single active consumer; leader-b stands by.
    await startAllAndGo(c, ["leader-a", "leader-b"]);

    const before = await midStream(c, "leader-a");
    expect(before.leader.id).toBe("leader-a");
    const killedAt = Date.now();
    expect(await c.kill("leader-a", "SIGKILL")).toEqual({ code: null, signal: "SIGKILL" });

    const after = await c.waitState("leader-b to report", (s) => s.leader?.id === "leader-b");
    // activeSince: when the current leader first reported after a different one.
    expect(after.leader.activeSince).toEqual(expect.any(String));
    expect(new Date(after.leader.activeSince).getTime()).toBeGreaterThan(killedAt);
    const final = await expectSettled(c);
    expect(final.leader.id).toBe("leader-b");
    expect(final.leader.activeSince).toBe(after.leader.activeSince);
    expect(c.proc("leader-b").running()).toBe(true);
  }, faultTestTimeout);

  it("kill -9 with no standby, then a restart: messages wait in the outbox, are not re-published, and the run resumes", async () => {
    const c = await run.start(env);
    await startAllAndGo(c);

    await midStream(c, "leader-1");
    await c.kill("leader-1", "SIGKILL");

    // With no leader, what was queued is worked off and the freed room is dispatched into the
    // outbox, where it waits. Once those units are older than RTB_DISPATCH_TIMEOUT_MS (3 s),
    // the reconciler (every second) still leaves them alone: the outbox holds their messages.
    await waitFor(
      "units dispatched over 4 s ago, waiting in the outbox",
      async () => {
        const { rows } = await sql<{ n: number }>`
          SELECT count(*)::int AS n FROM units WHERE status = 'dispatched' AND dispatched_at < now() - interval '4 seconds'`.execute(c.db);
        return rows[0]!.n > 0;
      },
      30_000,
      100,
    );
    const stalled = await c.get("/");
    expect(stalled.publishes.republished).toBe(0);
    expect(stalled.done).toBe(false);
    expect(await c.depth(run.place.topology.box)).toBeGreaterThan(0);

    await c.restart("leader-1");
    await expectSettled(c);
  }, faultTestTimeout);

  it("SIGTERM: exits 0 within RTB_SHUTDOWN_TIMEOUT_MS, loses nothing it held, and the run completes after a restart", async () => {
    const c = await run.start(env);
    await startAllAndGo(c);

    await midStream(c, "leader-1");
    const shutdownMs = Number(c.env.RTB_SHUTDOWN_TIMEOUT_MS);
    expect(await c.kill("leader-1", "SIGTERM", shutdownMs + 15_000)).toEqual({ code: 0, signal: null });
    expect(c.output("leader-1")).toContain('"msg":"stopped"');
    expect(c.output("leader-1")).not.toContain("did not finish in time");

    await c.restart("leader-1");
    await expectSettled(c);
  }, faultTestTimeout);
});
