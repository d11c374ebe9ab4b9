import { beforeAll, describe, expect, it } from "vitest";
import type { Channel, ChannelModel } from "amqplib";
import { encodeMessage, MAX_JOB_UNITS, parseMessage, StatusMessage, type StatusUpdate } from "@rtb/protocol";
import { queueDepth, rawChannel, testLogger, useTestPlace, waitFor } from "@rtb/testing";
import { loadAgentConfig, startAgent, type AgentService, type Handler } from "@rtb/agent";

/**
 * Batch jobs (several units in one job message, what the leader sends while a queue is deep),
 * with this file in the leader's and the api's place: it publishes jobs and reads the inbox.
 */
const FAST = "batched";
const SLOW = "batched-slow";
const place = useTestPlace({ kinds: [FAST, SLOW] });
let conn: ChannelModel;
let ch: Channel;
let agent: AgentService;
/** How many handlers ran at once at most. */
let running = 0;
let mostAtOnce = 0;
const calls = new Map<number, number>();

beforeAll(async () => {
  ({ conn, ch } = await rawChannel(place));
  const fast: Handler = async (job) => {
    calls.set(job.unitId, (calls.get(job.unitId) ?? 0) + 1);
    running++;
    mostAtOnce = Math.max(mostAtOnce, running);
    await new Promise((r) => setTimeout(r, (job.payload as { ms?: number }).ms ?? 0));
    running--;
    return { unit: job.unitId };
  };
  // Waits for its signal (the agent's shutdown), except the units whose payload says `quick`.
  const slow: Handler = (job) =>
    new Promise((resolve, reject) => {
      calls.set(job.unitId, (calls.get(job.unitId) ?? 0) + 1);
      if ((job.payload as { quick?: boolean }).quick) return resolve("done");
      job.signal.addEventListener("abort", () => reject(job.signal.reason));
    });
  agent = place.own(
    await startAgent({ ...loadAgentConfig(place.env), RTB_AGENT_ID: "agent-batch-1", RTB_AGENT_CONCURRENCY: 8, RTB_SHUTDOWN_TIMEOUT_MS: 2_000 }, testLogger("agent"), new Map([[FAST, fast], [SLOW, slow]])),
  );
});

const batch = (kind: string, units: { unitId: number; attempt: number; payload?: unknown }[]) =>
  ch.publish(place.topology.jobsExchange, kind, encodeMessage({ v: 1, type: "job", kind, units: units.map((u) => ({ payload: {}, ...u })) }), { persistent: true });

/** Every inbox message so far (drained), each with its updates. */
const messages: StatusUpdate[][] = [];
async function drain(): Promise<StatusUpdate[]> {
  for (let m = await ch.get(place.topology.inbox, { noAck: true }); m; m = await ch.get(place.topology.inbox, { noAck: true })) {
    const parsed = parseMessage(StatusMessage, m.content);
    if (parsed.ok && parsed.value.updates.length > 0) messages.push(parsed.value.updates);
  }
  return messages.flat();
}
const ids = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

describe("an agent given a batch job", () => {
  it("runs every unit at most RTB_AGENT_CONCURRENCY at a time, reports each in shared messages, and acks the job once", async () => {
    const units = ids(1, 40);
    batch(FAST, units.map((unitId) => ({ unitId, attempt: 1, payload: { ms: 20 } })));
    const done = await waitFor("40 success reports", async () => {
      const all = (await drain()).filter((u) => u.unitId <= 40);
      return all.filter((u) => u.status === "success").length === 40 ? all : null;
    });
    for (const unitId of units) {
      expect(done.filter((u) => u.unitId === unitId).map((u) => u.status)).toEqual(["processing", "success"]);
      expect(done.find((u) => u.unitId === unitId && u.status === "success")?.result).toEqual({ unit: unitId });
    }
    expect(mostAtOnce).toBe(8);
    // Reports that start or end together share a message: far fewer messages than reports.
    expect(messages.length).toBeLessThan(40);
    await waitFor("the job acked", async () => agent.stats.inFlight === 0 && (await queueDepth(conn, place.topology.jobQueue(FAST))) === 0);
    expect(agent.stats.succeeded).toBe(40);
  });

  it(`takes a batch of MAX_JOB_UNITS (${MAX_JOB_UNITS}) units, and dead-letters one of ${MAX_JOB_UNITS + 1}`, async () => {
    const deadBefore = await queueDepth(conn, place.topology.dead);
    batch(FAST, ids(1_000_000, MAX_JOB_UNITS + 1).map((unitId) => ({ unitId, attempt: 1 })));
    batch(FAST, ids(100, MAX_JOB_UNITS).map((unitId) => ({ unitId, attempt: 1 })));
    await waitFor(`${MAX_JOB_UNITS} success reports`, async () => (await drain()).filter((u) => u.unitId >= 100 && u.unitId < 100 + MAX_JOB_UNITS && u.status === "success").length === MAX_JOB_UNITS);
    await waitFor("the oversize job dead-lettered", async () => (await queueDepth(conn, place.topology.dead)) === deadBefore + 1);
    expect(agent.stats.deadLettered).toBe(1);
    expect((await drain()).some((u) => u.unitId >= 1_000_000)).toBe(false);
  });

  it("on shutdown hands back only the units not reported, as one job, so the finished ones never run again", async () => {
    // Two quick units finish; three wait for the shutdown.
    batch(SLOW, [
      { unitId: 5001, attempt: 1, payload: { quick: true } },
      { unitId: 5002, attempt: 1 },
      { unitId: 5003, attempt: 1, payload: { quick: true } },
      { unitId: 5004, attempt: 1 },
      { unitId: 5005, attempt: 1 },
    ]);
    await waitFor("the quick ones reported", async () => (await drain()).filter((u) => (u.unitId === 5001 || u.unitId === 5003) && u.status === "success").length === 2);
    await waitFor("every handler started", () => [5001, 5002, 5003, 5004, 5005].every((id) => calls.has(id)));
    await agent.stop();
    // What is left on the queue: one job with exactly the three unfinished units.
    const left = await waitFor("the job handed back", async () => (await ch.get(place.topology.jobQueue(SLOW), { noAck: true })) || null);
    const job = JSON.parse(left.content.toString()) as { units: { unitId: number; attempt: number }[] };
    expect(job.units.map((u) => u.unitId).sort()).toEqual([5002, 5004, 5005]);
    expect(await ch.get(place.topology.jobQueue(SLOW), { noAck: true })).toBe(false);
    // The three cut short reported nothing terminal.
    expect((await drain()).filter((u) => [5002, 5004, 5005].includes(u.unitId) && u.status !== "processing")).toEqual([]);
  });
});
