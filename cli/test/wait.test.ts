import { describe, expect, it } from "vitest";
import { startSystem, useTestPlace, waitFor } from "@rtb/testing";
import { rtb, rtbJson, start, startListeningApi } from "./support.ts";

/** `rtb go --wait` against a real api, leader and agents: it returns when the backlog drains. */
const place = useTestPlace({ perTest: true });

const fast = {
  RTB_BROADCAST_MAX_QUEUE: "8",
  RTB_AGENT_WORK_MIN_MS: "1",
  RTB_AGENT_WORK_MAX_MS: "10",
  RTB_AGENT_ERROR_RATE: "0.2",
  RTB_RETRY_BACKOFF_MS: "20",
  RTB_RECONCILE_CRON: "*/1 * * * * *",
  // Failures are retried until they succeed (0.2^20): a unit left in error would make the run exit 3.
  RTB_MAX_ATTEMPTS: "20",
};

describe("rtb go --wait", () => {
  it("starts dispatching, shows progress, and exits 0 once every unit is terminal", async () => {
    const system = place.own(await startSystem(place, { ...fast, RTB_SEED_UNITS: "60" }, { listen: true }));
    const env = { ...place.env, RTB_API_URL: system.url! };
    // --timeout only bounds a broken run, so that it fails with the progress lines to read.
    const r = await rtb(["go", "--wait", "--interval", "100", "--timeout", "45"], env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^dispatching is on \(8 dispatched now\); waiting for the backlog to drain\n/);
    expect(r.stdout).toMatch(/\ndrained in \S+: (\d+) success, (\d+) error, 0 cancelled\n$/);
    const [, success, error] = /: (\d+) success, (\d+) error/.exec(r.stdout)!;
    expect(Number(success) + Number(error)).toBe(60);
    // Not a terminal: plain progress lines, the last one complete.
    const lines = r.stderr.trimEnd().split("\n");
    expect(lines.at(-1)).toMatch(/^(\d+)\/\1 done \(100\.0%\)/);
    expect(r.stderr).not.toContain("\r");
    expect(await rtbJson(["status"], env)).toMatchObject({ done: true, dispatching: true, counts: { pending: 0, processing: 0 } });

    // Again, for a script: seed more, then one JSON document once drained.
    await rtb(["seed", "25", "--max-attempts", "20"], env);
    const json = await rtbJson(["go", "--wait", "--interval", "100", "--quiet"], env);
    expect(json.go).toMatchObject({ dispatching: true, changed: false });
    expect(json.drained).toBe(true);
    expect(json.status).toMatchObject({ done: true, total: 85 });
    expect(json.status.counts.success + json.status.counts.error).toBe(85);
    expect(json.elapsedMs).toBeGreaterThanOrEqual(0);
  });

  it("stops waiting on Ctrl-C (exit 130) and leaves dispatching on", async () => {
    // An api with no agents: the backlog cannot drain.
    const api = place.own(await startListeningApi(place, { RTB_SEED_UNITS: "20" }));
    const env = { RTB_API_URL: api.url };
    const waiting = start(["go", "--wait", "--interval", "100"], env);
    await waitFor("the first progress line", () => / done \(/.test(waiting.stderr()), 30_000);
    waiting.child.kill("SIGINT");
    const r = await waiting.done;
    expect(r.code).toBe(130);
    expect(r.stderr).toContain("stopped waiting (Ctrl-C); dispatching goes on");
    expect(await rtbJson(["status"], env)).toMatchObject({ dispatching: true, done: false });
  });

  it("exits 3 once drained when units ended in error, saying so", async () => {
    const system = place.own(await startSystem(place, { ...fast, RTB_SEED_UNITS: "6", RTB_AGENT_ERROR_RATE: "1", RTB_MAX_ATTEMPTS: "1" }, { listen: true }));
    const r = await rtb(["go", "--wait", "--interval", "100", "--timeout", "45"], { ...place.env, RTB_API_URL: system.url! });
    expect(r.code, r.stderr).toBe(3);
    expect(r.stdout).toMatch(/drained in \S+: 0 success, 6 error, 0 cancelled\n$/);
    expect(r.stderr).toContain("rtb go: drained, but 6 units ended in error (exit 3;");
  });

  it("gives up after --timeout with exit 1", async () => {
    const api = place.own(await startListeningApi(place, { RTB_SEED_UNITS: "5" }));
    const r = await rtb(["go", "--wait", "--interval", "100", "--timeout", "1"], { RTB_API_URL: api.url });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("rtb go: gave up after --timeout 1 s; the backlog has not drained");
    // Not a terminal: the progress ends with a line of its own, however soon it gave up.
    expect(r.stderr).toMatch(/\d+\/\d+ done \([\d.]+%\).*\(timed out\)\n/);
  });
});
