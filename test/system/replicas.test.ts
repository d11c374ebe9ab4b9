import { describe, expect, it } from "vitest";
import { DUTY_NAMES } from "@rtb/protocol";
import { catchUpAndPause, clusterPerTest, expectSettled, faultTestTimeout, getJson, logLines, midRunEnv, waitFor, type Cluster } from "@rtb/testing";

/**
 * Api replicas as production runs them: two apis on one database and broker, two leaders
 * (active and standby), four agents, all real processes. The api holding the duties and the
 * active leader are killed with SIGKILL mid-run.
 */
const run = clusterPerTest();

// A short lease, so the hand-over is quick; a short retention, so pruning (a duty) runs all along.
// 1,000 units: four agents run 400 in about 2.5 s, and pruning starts 2 to 3 s after the first
// success, so with 400 the backlog was once empty before anything was pruned.
const env = { ...midRunEnv, RTB_SEED_UNITS: "1000", RTB_RETENTION: "2s", RTB_DUTY_LEASE_MS: "2000" };
const LEASE_MS = 2_000;

/** GET / of each api every 100 ms while it runs: which duties each says it holds. */
function sampleDuties(c: Cluster, names: ("api" | "api-2")[]) {
  const samples: { at: number; held: Record<string, string[]> }[] = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const held: Record<string, string[]> = {};
      await Promise.all(
        names.map(async (n) => {
          if (!c.proc(n).running()) return;
          const s = await getJson(`${await c.urlOf(n)}/`).catch(() => null);
          if (s) held[n] = s.duties.heldByThisApi;
        }),
      );
      samples.push({ at: Date.now(), held });
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return {
    samples,
    async stop() {
      stopped = true;
      await loop;
    },
  };
}

/** The times (ms) of an api's log lines whose message matches. */
const linesAt = (output: string, msg: RegExp) => logLines(output).filter((l) => msg.test(String(l.msg))).map((l) => Number(l.time));

describe("api replicas", () => {
  it("2 apis, 2 leaders, 4 agents; the duty-holding api and the active leader killed mid-run: the other api takes the duties, nothing lost, never over the bound, each schedule occurrence once, each duty done by one api at a time", async () => {
    const c = await run.start(env);
    await c.start("api");
    await c.start("api-2");
    await c.start("leader-1");
    await c.start("leader-2");
    for (const i of [1, 2, 3, 4]) await c.start(`agent-${i}`);
    const second = await c.urlOf("api-2");

    // The first api to start holds every duty, and both say so.
    const first = await c.get("/");
    expect(first.duties.leases.map((l: any) => [l.duty, l.holder])).toEqual(DUTY_NAMES.map((d) => [d, first.duties.thisApi]));
    expect((await getJson(`${second}/`)).duties).toMatchObject({ thisApi: "api-2", heldByThisApi: [] });
    const sampler = sampleDuties(c, ["api", "api-2"]);

    // Made on the api that does not fire it, started on it too.
    const made = await fetch(`${second}/schedules`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name: "tick", cron: "* * * * * *", unit: { kind: "simulate", group: "scheduled" } }) });
    expect(made.status).toBe(201);
    expect(await getJson(`${second}/go`)).toMatchObject({ dispatching: true });
    // Successes pruned are no longer counted in counts.success: count them with the pruned.
    await c.waitState("the run to be under way, pruning included", (s) => s.counts.success + s.retention.pruned.units >= 60 && s.counts.pending > 0 && s.retention.pruned.units > 0);
    // Both apis consume the inbox.
    await waitFor("both apis to apply reports", async () => (await c.get("/")).reports.applied > 0 && (await getJson(`${second}/`)).reports.applied > 0, 10_000, 100);

    const leaderBefore = (await c.get("/")).leader.id;
    expect(await c.kill("api", "SIGKILL")).toEqual({ code: null, signal: "SIGKILL" });
    const killedAt = Date.now();
    expect(await c.kill(leaderBefore, "SIGKILL")).toEqual({ code: null, signal: "SIGKILL" });

    // The killed api's leases run out; api-2 takes every duty within about a lease.
    const taken = await waitFor("api-2 to hold every duty", async () => {
      const s = await getJson(`${second}/`);
      return s.duties.heldByThisApi.length === DUTY_NAMES.length ? s : null;
    }, 4 * LEASE_MS, 50);
    const handOverMs = Date.now() - killedAt;
    console.log(`duties handed over ${handOverMs} ms after the holder's SIGKILL (RTB_DUTY_LEASE_MS ${LEASE_MS})`);
    expect(handOverMs).toBeLessThan(LEASE_MS + LEASE_MS / 3 + 2_000);
    expect(taken.duties.leases.map((l: any) => [l.duty, l.holder, l.handovers])).toEqual(DUTY_NAMES.map((d) => [d, "api-2", 1]));
    // The standby leader routes now.
    await waitFor("the standby leader to route", async () => (await c.get("/")).leader?.id !== leaderBefore, 30_000, 100);

    // The schedule caught up across the hand-over, then paused.
    const { schedule: tick, occurrences } = await catchUpAndPause(c, "tick");
    await expectSettled(c, 60_000);
    await sampler.stop();

    // Each occurrence once, none left out: one unit a second from the schedule's creation to its
    // last firing (and expectSettled counted them: every unit ever made is there or was pruned,
    // so an occurrence fired twice would be one unit too many). The units left have one each.
    expect(tick).toMatchObject({ fired: occurrences, skipped: 0 });
    const units = await c.db.selectFrom("units").select("scheduled_for").where("schedule_name", "=", "tick").execute();
    expect(new Set(units.map((u) => u.scheduled_for!.getTime())).size).toBe(units.length);

    // One api at a time: no sample saw a duty held by both, and both were sampled holding.
    for (const s of sampler.samples) {
      const a = s.held["api"] ?? [];
      expect(a.filter((d) => (s.held["api-2"] ?? []).includes(d)), `sampled at ${s.at}`).toEqual([]);
    }
    expect(sampler.samples.some((s) => s.held["api"]?.length === DUTY_NAMES.length)).toBe(true);
    // The duties' work, by their logs: api-2 pruned and reconciled only after it took them;
    // the killed api had pruned before.
    const tookAt = linesAt(c.output("api-2"), /^took duties/);
    expect(tookAt).toHaveLength(1);
    const pruning = /^pruned finished units/;
    expect(linesAt(c.output("api"), pruning).length).toBeGreaterThan(0);
    const pruned2 = linesAt(c.output("api-2"), pruning);
    expect(pruned2.length).toBeGreaterThan(0);
    expect(pruned2.filter((t) => t < tookAt[0]!)).toEqual([]);
    expect(linesAt(c.output("api-2"), /^(re-publishing|attempts timed out|queued units whose job was lost)/).filter((t) => t < tookAt[0]!)).toEqual([]);
  }, 2 * faultTestTimeout);
});
