import { beforeAll, describe, expect, it } from "vitest";
import type { Channel } from "amqplib";
import { encodeMessage, type StatusUpdate } from "@rtb/protocol";
import { drainStatusReports, queueDepth, rawBroker, rawChannel, testLogger, useTestPlace, waitFor } from "@rtb/testing";
import { loadAgentConfig, startAgent, UnitCancelledError, type AgentService, type Handler } from "@rtb/agent";

/**
 * An agent hearing cancels on the control exchange, with this file in the api's place: it
 * publishes jobs and cancel messages itself and reads the agent's reports from the inbox.
 */
const KIND = "cancellable";
const place = useTestPlace({ kinds: [KIND] });
let ch: Channel;
let agent: AgentService;
const reports: StatusUpdate[] = [];
/** What each handler call saw, by unit id: when it started, and its signal's abort (reason, ms after the cancel was published). */
const calls = new Map<number, { started: number; aborted?: { reason: unknown; afterCancelMs: number } }>();
const cancelledAt = new Map<number, number>();

beforeAll(async () => {
  ({ ch } = await rawChannel(place));
  // Honours its signal, as the README asks: waits until aborted (or 30 s), then throws.
  const handler: Handler = (job) =>
    new Promise((resolve, reject) => {
      const call: { started: number; aborted?: { reason: unknown; afterCancelMs: number } } = { started: Date.now() };
      calls.set(job.unitId, call);
      const timer = setTimeout(() => resolve({ finished: true }), (job.payload as { ms?: number }).ms ?? 30_000);
      job.signal.addEventListener("abort", () => {
        call.aborted = { reason: job.signal.reason, afterCancelMs: Date.now() - (cancelledAt.get(job.unitId) ?? Date.now()) };
        clearTimeout(timer);
        reject(job.signal.reason);
      });
    });
  agent = place.own(await startAgent({ ...loadAgentConfig(place.env), RTB_AGENT_ID: "agent-cancel-1", RTB_AGENT_CONCURRENCY: 4 }, testLogger("agent"), new Map([[KIND, handler]])));
});

const job = (unitId: number, attempt: number, payload: object = {}) =>
  ch.publish(place.topology.jobsExchange, KIND, encodeMessage({ v: 1, type: "job", unitId, attempt, kind: KIND, payload }), { persistent: true });
const cancel = (...units: { unitId: number; attempt: number }[]) => {
  for (const u of units) cancelledAt.set(u.unitId, Date.now());
  ch.publish(place.topology.controlExchange, "", encodeMessage({ v: 1, type: "cancel", units }));
};
const reportsOf = async (unitId: number) => (await drainStatusReports(ch, place.topology.inbox, reports)).filter((r) => r.unitId === unitId);

describe("an agent hearing a cancel", () => {
  it("aborts the running handler's signal with a UnitCancelledError, reports nothing more, and acks the job", async () => {
    job(1, 1);
    await waitFor("the handler to run", () => calls.has(1));
    await waitFor("its processing report", async () => (await reportsOf(1)).some((r) => r.status === "processing"));
    cancel({ unitId: 1, attempt: 1 });
    const call = await waitFor("the handler's signal to abort", () => calls.get(1)?.aborted);
    expect(call.reason).toBeInstanceOf(UnitCancelledError);
    // Measured, not asserted: how long from publishing the cancel to the abort.
    console.log(`cancel -> handler abort: ${call.afterCancelMs} ms`);
    await waitFor("the job acked", () => agent.stats.cancelled === 1 && agent.stats.inFlight === 0);
    // Nothing but the processing report, and the job is gone (acked, not handed back).
    await new Promise((r) => setTimeout(r, 300));
    expect((await reportsOf(1)).map((r) => r.status)).toEqual(["processing"]);
    const conn = place.own(await rawBroker());
    expect(await queueDepth(conn, place.topology.jobQueue(KIND))).toBe(0);
    expect(agent.stats).toMatchObject({ succeeded: 0, failed: 0, cancelled: 1 });
  });

  it("drops a job whose cancel it heard before the job arrived: the handler never runs, nothing is reported", async () => {
    cancel({ unitId: 2, attempt: 1 });
    // Two queues, no order between them: give the cancel a moment to reach the agent first.
    await new Promise((r) => setTimeout(r, 100));
    job(2, 1);
    await waitFor("the job dropped", () => agent.stats.dropped === 1);
    expect(calls.has(2)).toBe(false);
    expect(await reportsOf(2)).toEqual([]);
  });

  it("a cancel is for one attempt: the unit's next attempt runs", async () => {
    cancel({ unitId: 3, attempt: 1 });
    await new Promise((r) => setTimeout(r, 100));
    job(3, 2, { ms: 10 });
    await waitFor("attempt 2 to succeed", async () => (await reportsOf(3)).some((r) => r.status === "success" && r.attempt === 2));
  });

  it("a cancel heard twice (the api announces it again when a report shows it running) aborts once, harmlessly", async () => {
    job(4, 1);
    await waitFor("the handler to run", () => calls.has(4));
    cancel({ unitId: 4, attempt: 1 }, { unitId: 4, attempt: 1 });
    expect((await waitFor("the abort", () => calls.get(4)?.aborted)).reason).toBeInstanceOf(UnitCancelledError);
    await waitFor("acked", () => agent.stats.cancelled === 2 && agent.stats.inFlight === 0);
  });
});
