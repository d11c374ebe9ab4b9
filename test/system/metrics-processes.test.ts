import { afterEach, describe, expect, it } from "vitest";
import { metricValue, parsePrometheusText } from "@rtb/runtime";
import { exitWithin, killAll, logLines, run, useTestPlace, waitFor } from "@rtb/testing";

/** RTB_METRICS_PORT as an operator sets it: on the real entry points, in real processes. */
const place = useTestPlace();

afterEach(async () => {
  await killAll();
});

describe.each([
  ["leader", "services/leader/src/main.ts", "rtb_leader_units_routed_total"],
  ["agent", "services/agent/src/main.ts", "rtb_agent_jobs_in_flight"],
])("the %s", (service, entry, family) => {
  it(`with RTB_METRICS_PORT=127.0.0.1:0 logs the URL it listens on, answers GET /metrics there, and closes it on SIGTERM`, async () => {
    const p = run(entry, { ...place.env, RTB_LOG_LEVEL: "info", RTB_METRICS_PORT: "127.0.0.1:0" });
    const line = await waitFor("the `metrics listening` line", () => logLines(p.output()).find((l) => l.msg === "metrics listening"), 30_000, 100);
    expect(line.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    expect(line.service).toBe(service);
    await waitFor("the service to be ready", () => new RegExp(`"msg":"${service} ready`).test(p.output()), 30_000, 100);

    // Its readiness for health checks (compose), on the same listener.
    const ready = await fetch(line.url.replace(/\/metrics$/, "/readyz"), { signal: AbortSignal.timeout(10_000) });
    expect([ready.status, await ready.json()]).toEqual([200, { ready: true }]);

    const res = await fetch(line.url, { signal: AbortSignal.timeout(10_000) });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const samples = parsePrometheusText(await res.text());
    expect(metricValue(samples, family, { service })).toBe(0);
    expect(metricValue(samples, "rtb_broker_reconnects_total", { service })).toBe(0);
    expect(metricValue(samples, "process_start_time_seconds", { service })).toBeGreaterThan(0);

    p.child.kill("SIGTERM");
    expect((await exitWithin(p, 20_000)).code).toBe(0);
    await expect(fetch(line.url, { signal: AbortSignal.timeout(5_000) })).rejects.toThrow();
  });

  it("with a bare port listens on 127.0.0.1 only, or on RTB_API_HOST's host when that is set, and logs that address", async () => {
    const alone = run(entry, { ...place.env, RTB_LOG_LEVEL: "info", RTB_METRICS_PORT: "0", RTB_API_HOST: "" });
    const a = await waitFor("the `metrics listening` line", () => logLines(alone.output()).find((l) => l.msg === "metrics listening"), 30_000, 100);
    expect(a).toMatchObject({ address: expect.stringMatching(/^127\.0\.0\.1:\d+$/), everyInterface: false });
    const shared = run(entry, { ...place.env, RTB_LOG_LEVEL: "info", RTB_METRICS_PORT: "0", RTB_API_HOST: "0.0.0.0:8080" });
    const b = await waitFor("the `metrics listening` line", () => logLines(shared.output()).find((l) => l.msg === "metrics listening"), 30_000, 100);
    expect(b).toMatchObject({ address: expect.stringMatching(/^0\.0\.0\.0:\d+$/), everyInterface: true });
    expect((await fetch(b.url, { signal: AbortSignal.timeout(10_000) })).status).toBe(200);
  });

  // Every bad form is covered by packages/runtime/src/metrics.test.ts; here, that the entry point refuses one.
  it("refuses a bad RTB_METRICS_PORT at start, naming the variable (exit 2)", async () => {
    const value = "nope";
    const p = run(entry, { ...place.env, RTB_METRICS_PORT: value });
    expect((await exitWithin(p, 30_000)).code).toBe(2);
    expect(p.output()).toContain(`RTB_METRICS_PORT="${value}": expected a port or host:port`);
  });
});
