import { beforeAll, expect, it } from "vitest";
import type { Channel } from "amqplib";
import { assertJobQueue, metricValue, parsePrometheusText } from "@rtb/runtime";
import { type StatusUpdate } from "@rtb/protocol";
import { capturingLogger, useTestPlace, waitFor, rawChannel, drainStatusReports } from "@rtb/testing";
import { loadLeaderConfig, startLeaderService, type LeaderService } from "@rtb/leader";

/** The leader's own metrics listener (RTB_METRICS_PORT) and its log lines, captured as JSON. */
const LEADER_ID = "leader-m";
const place = useTestPlace({ kinds: ["simulate"] });
let leader: LeaderService;
let ch: Channel;
const { logger, lines } = capturingLogger("leader");

beforeAll(async () => {
  ({ ch } = await rawChannel(place));
  await assertJobQueue(ch, place.topology, "simulate");
  leader = place.own(await startLeaderService(loadLeaderConfig({ ...place.env, RTB_LEADER_ID: LEADER_ID, RTB_METRICS_PORT: "127.0.0.1:0" }), logger));
});

/** Every status update the leader has reported so far (drains the inbox). */
const reported: StatusUpdate[] = [];
const drainInbox = () => drainStatusReports(ch, place.topology.inbox, reported);

async function scrape() {
  const res = await fetch(leader.metricsUrl!, { signal: AbortSignal.timeout(10_000) });
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
  return parsePrometheusText(await res.text());
}

it("logs `metrics listening` with the URL of the port it took, and answers GET /metrics there with the leader's families", async () => {
  expect(leader.metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
  expect(lines.find((l) => l.msg === "metrics listening")).toMatchObject({ url: leader.metricsUrl, leaderId: LEADER_ID });
  const s = await scrape();
  expect(metricValue(s, "rtb_leader_units_routed_total", { service: "leader" })).toBe(0);
  expect(metricValue(s, "rtb_leader_messages_in_flight")).toBe(0);
  expect(metricValue(s, "process_resident_memory_bytes", { service: "leader" })).toBeGreaterThan(0);
  expect((await fetch(leader.metricsUrl!.replace("/metrics", "/"))).status).toBe(404);
});

it("counts routed and unroutable units and what it published, and says which leader on every line", async () => {
  const units = [
    { unitId: 1, attempt: 1, kind: "simulate", payload: {} },
    { unitId: 2, attempt: 1, kind: "simulate", payload: {} },
    { unitId: 3, attempt: 2, kind: "nobody", payload: {} },
  ];
  ch.sendToQueue(place.topology.box, Buffer.from(JSON.stringify({ v: 1, type: "dispatch", units })), { persistent: true });
  await waitFor("three reports", async () => (await drainInbox()).length >= 3);
  const s = await waitFor("the counts", async () => {
    const s = await scrape();
    return metricValue(s, "rtb_leader_units_unroutable_total") === 1 ? s : null;
  });
  expect(metricValue(s, "rtb_leader_units_routed_total")).toBe(2);
  // A mandatory job that comes back is confirmed too (after its return): 3 publishes.
  expect(metricValue(s, "rtb_broker_messages_published_total", { publisher: "jobs" })).toBe(3);
  expect(metricValue(s, "rtb_broker_messages_published_total", { publisher: "inbox" })).toBeGreaterThanOrEqual(1);
  expect(metricValue(s, "rtb_broker_messages_consumed_total", { queue_role: "outbox" })).toBe(1);
  expect(metricValue(s, "rtb_leader_messages_in_flight")).toBe(0);

  // The warning names the unit and its attempt.
  expect(lines.find((l) => /no agent consumes/.test(l.msg))).toMatchObject({ level: 40, units: [{ unitId: 3, attempt: 2 }] });
  for (const l of lines) expect(l.leaderId, JSON.stringify(l)).toBe(LEADER_ID);
});
