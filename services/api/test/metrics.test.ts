import { beforeAll, describe, expect, it } from "vitest";
import type { ChannelModel } from "amqplib";
import type { ApiService } from "@rtb/api";
import { UNIT_STATUSES } from "@rtb/protocol";
import { metricValue, parsePrometheusText, type Sample } from "@rtb/runtime";
import { rawBroker, useTestPlace, waitFor } from "@rtb/testing";
import { call, publishRaw, startApi, statusMessage } from "./support.ts";

// One api, 10 seeded units, RTB_BROADCAST_MAX_QUEUE=4 and no leader: the reports the tests
// publish to the inbox are the only ones, so every counter below is exact.
const MAX_QUEUE = 4;
const TOKEN = "metrics-token-for-tests-0123456789";

const place = useTestPlace();
let api: ApiService;
let conn: ChannelModel;

beforeAll(async () => {
  api = place.own(await startApi(place, { RTB_BROADCAST_MAX_QUEUE: String(MAX_QUEUE) }));
  conn = place.own(await rawBroker());
});

async function scrape(a: ApiService = api, headers: Record<string, string> = {}): Promise<Sample[]> {
  const res = await a.app.request("/metrics", { headers });
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
  return parsePrometheusText(await res.text());
}

describe("GET /metrics on the api", () => {
  it("before dispatching: units by status from the tallies, the bound, the process metrics, all labelled service=api", async () => {
    const s = await scrape();
    expect(metricValue(s, "rtb_units", { status: "pending", service: "api" })).toBe(10);
    for (const status of UNIT_STATUSES.filter((s) => s !== "pending")) expect(metricValue(s, "rtb_units", { status })).toBe(0);
    expect(metricValue(s, "rtb_outstanding")).toBe(0);
    expect(metricValue(s, "rtb_outstanding_max")).toBe(MAX_QUEUE);
    expect(metricValue(s, "rtb_dispatching")).toBe(0);
    expect(metricValue(s, "rtb_units_dispatched_total")).toBe(0);
    expect(metricValue(s, "rtb_broker_reconnects_total")).toBe(0);
    expect(metricValue(s, "rtb_status_reports_ignored_total", { reason: "stale_attempt" })).toBe(0);
    expect(metricValue(s, "rtb_dead_lettered_total", { reason: "invalid_status_message" })).toBe(0);
    // Migrations, the seed and the reads behind this very scrape went to PostgreSQL.
    expect(metricValue(s, "rtb_db_statements_total")).toBeGreaterThan(0);
    expect(metricValue(s, "process_resident_memory_bytes", { service: "api" })).toBeGreaterThan(0);
    expect(s.every((sample) => sample.labels.service === "api")).toBe(true);
  });

  it("every statement counts: a scrape's own reads raise rtb_db_statements_total", async () => {
    const before = metricValue(await scrape(), "rtb_db_statements_total")!;
    const after = metricValue(await scrape(), "rtb_db_statements_total")!;
    expect(after).toBeGreaterThan(before);
  });

  it("after /go: the dispatched units, outstanding at the bound, the outbox publishes and a top-up timed", async () => {
    expect((await call(api, "/go")).body).toMatchObject({ dispatchedNow: MAX_QUEUE });
    const s = await scrape();
    expect(metricValue(s, "rtb_units", { status: "dispatched" })).toBe(MAX_QUEUE);
    expect(metricValue(s, "rtb_units", { status: "pending" })).toBe(10 - MAX_QUEUE);
    expect(metricValue(s, "rtb_outstanding")).toBe(MAX_QUEUE);
    expect(metricValue(s, "rtb_dispatching")).toBe(1);
    expect(metricValue(s, "rtb_units_dispatched_total")).toBe(MAX_QUEUE);
    // The 4 units went out in one outbox message, confirmed.
    expect(metricValue(s, "rtb_broker_messages_published_total", { publisher: "outbox" })).toBe(1);
    expect(metricValue(s, "rtb_top_up_duration_seconds_count")).toBeGreaterThanOrEqual(1);
    expect(metricValue(s, "rtb_top_up_duration_seconds_sum")).toBeGreaterThan(0);
  });

  it("counts applied, ignored and dead-lettered status reports by reason, the batches, and the attempts that ended", async () => {
    const { body } = await call(api, "/units?status=dispatched");
    const [a, b] = body.units as { id: number; attempt: number }[];
    await publishRaw(
      conn,
      place.topology.inbox,
      statusMessage([{ unitId: a!.id, attempt: 1, status: "queued" }, { unitId: b!.id, attempt: 1, status: "queued" }]),
      // The same report again (a duplicate), and one for an attempt that is not the unit's.
      statusMessage([{ unitId: a!.id, attempt: 1, status: "queued" }, { unitId: b!.id, attempt: 7, status: "queued" }]),
      "{not json",
    );
    await waitFor("both units queued", async () => (await call(api, "/")).body.counts.queued === 2);
    await publishRaw(conn, place.topology.inbox, statusMessage([{ unitId: a!.id, attempt: 1, status: "success", result: { ok: true } }]));
    const s = await waitFor("the reports to be counted", async () => {
      const s = await scrape();
      return metricValue(s, "rtb_dead_lettered_total", { reason: "invalid_status_message" }) === 1 && (metricValue(s, "rtb_status_reports_ignored_total") ?? 0) >= 2 ? s : null;
    });
    await waitFor("the success to be applied", async () => metricValue(await scrape(), "rtb_status_reports_applied_total") === 3);
    s.splice(0, s.length, ...(await scrape()));
    expect(metricValue(s, "rtb_status_reports_applied_total")).toBe(3);
    expect(metricValue(s, "rtb_status_reports_ignored_total", { reason: "not_forward" })).toBe(1);
    expect(metricValue(s, "rtb_status_reports_ignored_total", { reason: "stale_attempt" })).toBe(1);
    expect(metricValue(s, "rtb_units", { status: "queued" })).toBe(1);
    expect(metricValue(s, "rtb_units", { status: "success" })).toBe(1);
    // Four deliveries; the three valid ones were applied in batches of one or more.
    expect(metricValue(s, "rtb_broker_messages_consumed_total", { queue_role: "inbox" })).toBe(4);
    expect(metricValue(s, "rtb_inbox_batch_messages_sum")).toBe(3);
    expect(metricValue(s, "rtb_inbox_batch_messages_count")).toBeGreaterThanOrEqual(2);
    // One attempt ended, in success, some time after its dispatch.
    expect(metricValue(s, "rtb_unit_duration_seconds_count", { kind: "simulate", status: "success" })).toBe(1);
    expect(metricValue(s, "rtb_unit_duration_seconds_sum", { kind: "simulate", status: "success" })).toBeGreaterThan(0);
    expect(metricValue(s, "rtb_unit_duration_seconds_count", { status: "error" })).toBeUndefined();
    // GET / tells the same story as the metrics.
    const state = (await call(api, "/")).body;
    expect(state.reports).toEqual({ applied: 3, ignored: { not_forward: 1, stale_attempt: 1 } });
    expect(state.counts).toMatchObject({ queued: 1, success: 1 });
  });
});

describe("GET /metrics with RTB_API_TOKEN", () => {
  const guarded = useTestPlace();
  let readsToo: ApiService;
  beforeAll(async () => {
    readsToo = guarded.own(await startApi(guarded, { RTB_API_TOKEN: TOKEN, RTB_API_TOKEN_READS: "true" }));
  });

  it("needs the bearer token when reads need it (RTB_API_TOKEN_READS=true)", async () => {
    const missing = await readsToo.app.request("/metrics");
    expect(missing.status).toBe(401);
    expect(await missing.json()).toMatchObject({ error: "unauthorized", field: "Authorization" });
    expect((await readsToo.app.request("/metrics", { headers: { Authorization: `Bearer ${TOKEN}x` } })).status).toBe(401);
    const s = await scrape(readsToo, { Authorization: `Bearer ${TOKEN}` });
    expect(metricValue(s, "rtb_units", { status: "pending" })).toBe(10);
  });
});
