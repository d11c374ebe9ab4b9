import { afterEach, describe, expect, it } from "vitest";
import { z } from "zod";
import { ConfigError, loadConfig } from "./config.ts";
import { createLogger } from "./logger.ts";
import { counterFrom, createServiceMetrics, labelledCounterFrom, metricsAddress, metricsConfig, startMetricsServer, type MetricsServer } from "./metrics.ts";
import { metricValue, parsePrometheusText } from "./prometheus-text.ts";

const silent = createLogger({ service: "test", level: "silent", format: "json" });
const schema = z.object(metricsConfig);

describe("RTB_METRICS_PORT", () => {
  it("is optional: unset (or empty) means no listener", () => {
    expect(loadConfig(schema, {}).RTB_METRICS_PORT).toBeUndefined();
    expect(loadConfig(schema, { RTB_METRICS_PORT: "" }).RTB_METRICS_PORT).toBeUndefined();
  });

  it.each([
    ["9464", { host: undefined, port: 9464 }],
    ["127.0.0.1:0", { host: "127.0.0.1", port: 0 }],
    ["[::1]:9464", { host: "::1", port: 9464 }],
    ["metrics.local:9100", { host: "metrics.local", port: 9100 }],
  ])("accepts %s", (value, expected) => {
    expect(loadConfig(schema, { RTB_METRICS_PORT: value }).RTB_METRICS_PORT).toEqual(expected);
  });

  it("listens where it says; a bare port on RTB_API_HOST's host, else on 127.0.0.1 (never every interface unasked)", () => {
    const at = (env: Record<string, string>) => metricsAddress(loadConfig(schema, env));
    expect(at({})).toBeUndefined();
    expect(at({ RTB_METRICS_PORT: "9464" })).toEqual({ host: "127.0.0.1", port: 9464 });
    expect(at({ RTB_METRICS_PORT: "9464", RTB_API_HOST: "10.1.2.3:8080" })).toEqual({ host: "10.1.2.3", port: 9464 });
    expect(at({ RTB_METRICS_PORT: "9464", RTB_API_HOST: "0.0.0.0" })).toEqual({ host: "0.0.0.0", port: 9464 });
    expect(at({ RTB_METRICS_PORT: "[::1]:9464", RTB_API_HOST: "0.0.0.0:8080" })).toEqual({ host: "::1", port: 9464 });
  });

  it.each(["nope", "localhost", "65536", "-1", "127.0.0.1:", "1.5"])("refuses %s, naming the variable", (value) => {
    let error: unknown;
    try {
      loadConfig(schema, { RTB_METRICS_PORT: value });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems).toEqual([{ variable: "RTB_METRICS_PORT", value, expected: expect.stringContaining("host:port") }]);
  });
});

describe("service metrics", () => {
  it("each registry counts only its own service, with the service label and the process metrics", async () => {
    const a = createServiceMetrics("leader");
    const b = createServiceMetrics("agent");
    a.published.inc({ publisher: "jobs" }, 3);
    const samplesA = parsePrometheusText(await a.registry.metrics());
    const samplesB = parsePrometheusText(await b.registry.metrics());
    expect(metricValue(samplesA, "rtb_broker_messages_published_total", { publisher: "jobs", service: "leader" })).toBe(3);
    expect(metricValue(samplesB, "rtb_broker_messages_published_total")).toBeUndefined();
    expect(metricValue(samplesB, "process_cpu_user_seconds_total", { service: "agent" })).toBeGreaterThanOrEqual(0);
  });

  it("counters read at scrape time follow their source; known labels are exported at 0", async () => {
    const m = createServiceMetrics("api", { processMetrics: false });
    const totals = { n: 1, byReason: {} as Record<string, number> };
    counterFrom(m.registry, "t_total", "t", () => totals.n);
    labelledCounterFrom(m.registry, "t_reason_total", "t", "reason", () => totals.byReason, ["known"]);
    let samples = parsePrometheusText(await m.registry.metrics());
    expect(metricValue(samples, "t_total")).toBe(1);
    expect(metricValue(samples, "t_reason_total", { reason: "known" })).toBe(0);
    totals.n = 5;
    totals.byReason = { known: 2, other: 7 };
    samples = parsePrometheusText(await m.registry.metrics());
    expect(metricValue(samples, "t_total")).toBe(5);
    expect(metricValue(samples, "t_reason_total", { reason: "known" })).toBe(2);
    expect(metricValue(samples, "t_reason_total", { reason: "other" })).toBe(7);
  });
});

describe("the metrics listener", () => {
  let server: MetricsServer | undefined;
  afterEach(async () => {
    await server?.stop();
    server = undefined;
  });

  it("answers GET /metrics in the Prometheus text format on the port it took, and 404 to anything else", async () => {
    const m = createServiceMetrics("agent", { processMetrics: false });
    m.consumed.inc({ queue_role: "jobs" });
    const lines: Record<string, unknown>[] = [];
    const logger = createLogger({ service: "agent", level: "info", format: "json", destination: { write: (l: string) => void lines.push(JSON.parse(l)) } });
    server = await startMetricsServer(m.registry, { host: "127.0.0.1", port: 0 }, logger);
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    expect(server.url).not.toContain(":0/");
    expect(lines).toContainEqual(expect.objectContaining({ msg: "metrics listening", url: server.url, address: new URL(server.url).host, everyInterface: false }));

    const res = await fetch(server.url);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const samples = parsePrometheusText(await res.text());
    expect(metricValue(samples, "rtb_broker_messages_consumed_total", { queue_role: "jobs", service: "agent" })).toBe(1);

    for (const path of ["/", "/metrics/x", "/other"]) expect((await fetch(server.url.replace("/metrics", path))).status).toBe(404);
    expect((await fetch(server.url, { method: "POST" })).status).toBe(404);
  });

  it("logs the address it is really bound to: every interface is said so, not shown as localhost", async () => {
    const m = createServiceMetrics("agent", { processMetrics: false });
    const lines: Record<string, unknown>[] = [];
    const logger = createLogger({ service: "agent", level: "info", format: "json", destination: { write: (l: string) => void lines.push(JSON.parse(l)) } });
    server = await startMetricsServer(m.registry, { host: "0.0.0.0", port: 0 }, logger);
    expect(server.url).toMatch(/^http:\/\/0\.0\.0\.0:\d+\/metrics$/);
    expect(lines).toContainEqual(expect.objectContaining({ msg: "metrics listening", address: new URL(server.url).host, everyInterface: true }));
    expect(JSON.stringify(lines)).not.toContain("localhost");
  });

  it("answers GET /readyz from the service's readiness when given one (503 until ready), and 404 without", async () => {
    const m = createServiceMetrics("leader", { processMetrics: false });
    let ready = false;
    server = await startMetricsServer(m.registry, { host: "127.0.0.1", port: 0 }, silent, () => ready);
    const readyz = server.url.replace(/\/metrics$/, "/readyz");
    let res = await fetch(readyz);
    expect([res.status, await res.json()]).toEqual([503, { ready: false }]);
    ready = true;
    res = await fetch(readyz);
    expect([res.status, await res.json()]).toEqual([200, { ready: true }]);
    const plain = await startMetricsServer(m.registry, { host: "127.0.0.1", port: 0 }, silent);
    expect((await fetch(plain.url.replace(/\/metrics$/, "/readyz"))).status).toBe(404);
    await plain.stop();
  });

  it("refuses a port that is taken, naming RTB_METRICS_PORT", async () => {
    const m = createServiceMetrics("agent", { processMetrics: false });
    server = await startMetricsServer(m.registry, { host: "127.0.0.1", port: 0 }, silent);
    const port = Number(new URL(server.url).port);
    await expect(startMetricsServer(m.registry, { host: "127.0.0.1", port }, silent)).rejects.toThrow(/RTB_METRICS_PORT/);
  });

  it("stops with a scraper's keep-alive connection open", async () => {
    const m = createServiceMetrics("agent", { processMetrics: false });
    const s = await startMetricsServer(m.registry, { host: "127.0.0.1", port: 0 }, silent);
    expect((await fetch(s.url, { keepalive: true })).status).toBe(200);
    await s.stop();
    await expect(fetch(s.url)).rejects.toThrow();
  });
});
