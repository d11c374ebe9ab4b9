import { beforeAll, expect, it } from "vitest";
import { OUTCOMES } from "@rtb/protocol";
import { metricValue, parsePrometheusText, type Sample } from "@rtb/runtime";
import { openTestDb, startSystem, useTestPlace, waitFor, type System } from "@rtb/testing";
import type { DbHandle } from "@rtb/db";

/**
 * A small run of the whole system in this process (api, leader, two agents with
 * RTB_METRICS_PORT=127.0.0.1:0), then every service's /metrics read as Prometheus would: over
 * HTTP, in the text format. The counters must agree with GET / and with the database.
 */
const UNITS = 40;
const place = useTestPlace();
let h: DbHandle;
let system: System;
let final: any;

beforeAll(async () => {
  h = place.own(openTestDb(place));
  system = place.own(await startSystem(place, {
    RTB_SEED_UNITS: String(UNITS),
    RTB_BROADCAST_MAX_QUEUE: "8",
    RTB_RETRY_BACKOFF_MS: "10",
    RTB_AGENT_ERROR_RATE: "0.3",
    RTB_AGENT_WORK_MIN_MS: "1",
    RTB_AGENT_WORK_MAX_MS: "10",
    RTB_METRICS_PORT: "127.0.0.1:0",
  }));
  await system.get("/go");
  final = await waitFor("every unit to finish", async () => {
    const state = await system.get("/");
    return state.done ? state : null;
  }, 60_000);
});

async function scrape(url: string): Promise<Sample[]> {
  const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
  return parsePrometheusText(await res.text());
}

const scrapeApi = async () => {
  const res = await system.api.app.request("/metrics");
  expect(res.status).toBe(200);
  return parsePrometheusText(await res.text());
};

it("the api: units by status match GET /, dispatched == the dispatch events, messages and statements counted", async () => {
  const s = await scrapeApi();
  const state = await system.get("/");
  for (const [status, n] of Object.entries(state.counts)) expect(metricValue(s, "rtb_units", { status }), status).toBe(n);
  expect(metricValue(s, "rtb_outstanding")).toBe(0);
  expect(metricValue(s, "rtb_outstanding_max")).toBe(8);

  const { n: dispatchEvents } = await h.db
    .selectFrom("unit_events")
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .where("status", "=", "dispatched")
    .executeTakeFirstOrThrow();
  expect(dispatchEvents).toBeGreaterThanOrEqual(UNITS);
  expect(metricValue(s, "rtb_units_dispatched_total")).toBe(dispatchEvents);
  expect(metricValue(s, "rtb_status_reports_applied_total")).toBe(state.reports.applied);
  expect(metricValue(s, "rtb_broker_messages_published_total", { publisher: "outbox" })).toBeGreaterThan(0);
  expect(metricValue(s, "rtb_db_statements_total")).toBeGreaterThan(0);
  expect(metricValue(s, "rtb_top_up_duration_seconds_count")).toBeGreaterThan(0);
  expect(final.counts.success + final.counts.error).toBe(UNITS);

  // One observation per attempt that ended, by status: as many as the timelines' terminal events.
  const ended = await terminalEvents();
  expect(metricValue(s, "rtb_unit_duration_seconds_count", { kind: "simulate", status: "success" })).toBe(ended.success);
  expect(metricValue(s, "rtb_unit_duration_seconds_count", { kind: "simulate", status: "error" })).toBe(ended.error);
  expect(metricValue(s, "rtb_broker_messages_consumed_total", { queue_role: "inbox" })).toBeGreaterThan(0);
  expect(metricValue(s, "rtb_inbox_batch_messages_count")).toBeGreaterThan(0);
});

async function terminalEvents(): Promise<{ success: number; error: number }> {
  const rows = await h.db
    .selectFrom("unit_events")
    .select(["status", (eb) => eb.fn.countAll<number>().as("n")])
    .where("status", "in", OUTCOMES)
    .groupBy("status")
    .execute();
  return { success: rows.find((r) => r.status === "success")?.n ?? 0, error: rows.find((r) => r.status === "error")?.n ?? 0 };
}

it("the leader answers on its own listener: every unit routed once, jobs and reports published", async () => {
  expect(system.leader.metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
  const s = await scrape(system.leader.metricsUrl!);
  const dispatched = system.api.stats.dispatched;
  expect(metricValue(s, "rtb_leader_units_routed_total", { service: "leader" })).toBe(dispatched);
  expect(metricValue(s, "rtb_leader_units_unroutable_total")).toBe(0);
  // Units, not messages: a deep job queue makes the leader put several units in one job
  // (rtb_leader_units_per_job), which a loaded machine sees.
  const jobs = metricValue(s, "rtb_leader_units_per_job_count");
  expect(metricValue(s, "rtb_leader_units_per_job_sum")).toBe(dispatched);
  expect(metricValue(s, "rtb_broker_messages_published_total", { publisher: "jobs" })).toBe(jobs);
  expect(metricValue(s, "rtb_broker_messages_published_total", { publisher: "inbox" })).toBeGreaterThan(0);
  expect(metricValue(s, "rtb_leader_messages_in_flight")).toBe(0);
  const api = await scrapeApi();
  expect(metricValue(s, "rtb_broker_messages_consumed_total", { queue_role: "outbox" })).toBe(
    metricValue(api, "rtb_broker_messages_published_total", { publisher: "outbox" }),
  );
  expect(metricValue(s, "rtb_broker_reconnects_total")).toBe(0);
  expect(metricValue(s, "process_cpu_user_seconds_total", { service: "leader" })).toBeGreaterThan(0);
  // The api's families are the api's alone.
  expect(metricValue(s, "rtb_units")).toBeUndefined();
});

it("each agent answers on its own listener with its own families", async () => {
  const urls = system.agents.map((a) => a.metricsUrl);
  expect(new Set(urls).size).toBe(2);
  const sum = { inbox: 0, consumed: 0, success: 0, error: 0, handled: 0 };
  for (const url of urls) {
    const s = await scrape(url!);
    expect(metricValue(s, "rtb_agent_jobs_in_flight", { kind: "simulate", service: "agent" })).toBe(0);
    expect(metricValue(s, "rtb_leader_units_routed_total")).toBeUndefined();
    sum.inbox += metricValue(s, "rtb_broker_messages_published_total", { publisher: "inbox" }) ?? 0;
    sum.consumed += metricValue(s, "rtb_broker_messages_consumed_total", { queue_role: "jobs" }) ?? 0;
    sum.success += metricValue(s, "rtb_agent_jobs_total", { kind: "simulate", outcome: "success" }) ?? 0;
    sum.error += metricValue(s, "rtb_agent_jobs_total", { kind: "simulate", outcome: "error" }) ?? 0;
    sum.handled += metricValue(s, "rtb_agent_handler_duration_seconds_count", { kind: "simulate" }) ?? 0;
  }
  // Nothing failed on the way: every job routed was delivered once and run once, and every
  // attempt that ended was ended by an agent.
  expect(sum.inbox).toBeGreaterThan(0);
  // Every job message the leader published, consumed once (a job may carry several units).
  const leader = await scrape(system.leader.metricsUrl!);
  expect(sum.consumed).toBe(metricValue(leader, "rtb_broker_messages_published_total", { publisher: "jobs" }));
  expect(sum).toMatchObject(await terminalEvents());
  expect(sum.handled).toBe(sum.success + sum.error);
});
