import { beforeAll, expect, it } from "vitest";
import type { Channel } from "amqplib";
import { metricValue, parsePrometheusText } from "@rtb/runtime";
import { parseMessage, StatusMessage, type StatusUpdate } from "@rtb/protocol";
import { capturingLogger, useTestPlace, waitFor, rawChannel } from "@rtb/testing";
import { loadAgentConfig, PermanentJobError, startAgent, type AgentService, type Handler } from "@rtb/agent";

/**
 * An agent's JSON log lines, captured as they are written: every line that concerns a unit
 * says which unit, which attempt and which agent (and every other line which agent).
 */
const AGENT_ID = "agent-logs-1";
const place = useTestPlace();
let ch: Channel;
let agent: AgentService;
const { logger, lines } = capturingLogger("agent");

beforeAll(async () => {
  ({ ch } = await rawChannel(place));
  const handler: Handler = async (job) => {
    job.logger.info({ step: "render" }, "handler at work");
    if ((job.payload as { fail?: boolean }).fail) throw new PermanentJobError("scene 7 is corrupt");
    return { ok: true };
  };
  agent = place.own(await startAgent({ ...loadAgentConfig(place.env), RTB_AGENT_ID: AGENT_ID }, logger, new Map([["simulate", handler]])));
});

const job = (unitId: number, attempt: number, payload: object) =>
  ch.publish(place.topology.jobsExchange, "simulate", Buffer.from(JSON.stringify({ v: 1, type: "job", unitId, attempt, kind: "simulate", payload })), { persistent: true });

async function terminalReports(): Promise<StatusUpdate[]> {
  const found: StatusUpdate[] = [];
  for (let m = await ch.get(place.topology.inbox, { noAck: false }); m; m = await ch.get(place.topology.inbox, { noAck: false })) {
    const parsed = parseMessage(StatusMessage, m.content);
    if (parsed.ok) found.push(...parsed.value.updates.filter((u) => u.status === "success" || u.status === "error"));
  }
  return found;
}

it("every line about a job carries unitId, attempt and the agent's id; the handler's own lines too", async () => {
  job(41, 2, {});
  job(42, 1, { fail: true });
  const done: StatusUpdate[] = [];
  await waitFor("both jobs reported", async () => (done.push(...(await terminalReports())), done.length >= 2), 20_000);
  await waitFor("the agent's 'job done' lines", () => lines.filter((l) => l.msg === "job done").length >= 2);

  for (const [unitId, attempt] of [[41, 2], [42, 1]] as const) {
    const about = lines.filter((l) => l.unitId === unitId);
    // The handler's line (through job.logger) and the agent's own.
    expect(about.map((l) => l.msg)).toEqual(expect.arrayContaining(["handler at work", "job done"]));
    for (const l of about) expect(l).toMatchObject({ unitId, attempt, agentId: AGENT_ID, kind: "simulate", service: "agent" });
  }
  expect(lines.find((l) => l.unitId === 42 && l.msg === "job done")).toMatchObject({ status: "error" });
  // Lines that concern no unit still say which agent wrote them.
  expect(lines.find((l) => l.msg === "agent ready")).toMatchObject({ agentId: AGENT_ID, service: "agent" });
  for (const l of lines) expect(l.agentId, JSON.stringify(l)).toBe(AGENT_ID);
});

it("a job message without a unit is dead-lettered, said by a line with the agent's id, and counted in its metrics", async () => {
  ch.publish(place.topology.jobsExchange, "simulate", Buffer.from("{not json"), { persistent: true });
  await waitFor("the dead-letter line", () => lines.find((l) => l.msg === "dead-lettering an invalid job message"));
  expect(lines.find((l) => l.msg === "dead-lettering an invalid job message")).toMatchObject({ agentId: AGENT_ID, level: 40 });
  const s = parsePrometheusText(await agent.metrics.registry.metrics());
  expect(metricValue(s, "rtb_dead_lettered_total", { reason: "invalid_job_message", service: "agent" })).toBe(1);
  // The three deliveries, and the two jobs of the first test by outcome.
  expect(metricValue(s, "rtb_broker_messages_consumed_total", { queue_role: "jobs" })).toBe(3);
  expect(metricValue(s, "rtb_agent_jobs_total", { kind: "simulate", outcome: "success" })).toBe(1);
  expect(metricValue(s, "rtb_agent_jobs_total", { kind: "simulate", outcome: "error" })).toBe(1);
  expect(metricValue(s, "rtb_agent_handler_duration_seconds_count", { kind: "simulate" })).toBe(2);
  expect(metricValue(s, "rtb_agent_jobs_in_flight", { kind: "simulate" })).toBe(0);
});
