import { afterAll, beforeAll, expect, it } from "vitest";
import type { Channel, ChannelModel } from "amqplib";
import { assertTopology } from "@rtb/runtime";
import { createTestPlace, destroyTestPlace, queueDepth, rawBroker, testLogger, waitFor, type TestPlace } from "@rtb/testing";
import { loadAgentConfig, startAgent, type AgentService, type Handler } from "@rtb/agent";

// A job whose report the agent fails to send for a reason of its own (here: a result nested
// too deep for JSON.stringify) was handed back after a second and run again, forever. Only a
// broker failure hands a job back now (consumer.ts, retryLater); this one is dead-lettered
// and counted, and the agent goes on with the next job.
let place: TestPlace;
let conn: ChannelModel;
let ch: Channel;
let agent: AgentService;
const runs = new Map<number, number>();

beforeAll(async () => {
  place = await createTestPlace();
  conn = await rawBroker();
  ch = await conn.createChannel();
  await assertTopology(ch, place.topology);
  const handler: Handler = async (job) => {
    runs.set(job.unitId, (runs.get(job.unitId) ?? 0) + 1);
    if ((job.payload as { deep?: boolean }).deep) {
      let result: unknown = [];
      for (let i = 0; i < 20_000; i++) result = [result];
      return result;
    }
    return { ok: true };
  };
  agent = await startAgent({ ...loadAgentConfig(place.env), RTB_AGENT_ID: "agent-poison" }, testLogger("agent"), new Map([["simulate", handler]]));
});
afterAll(async () => {
  await agent?.stop();
  await conn?.close();
  if (place) await destroyTestPlace(place);
});

const job = (unitId: number, payload: object) =>
  ch.publish(place.topology.jobsExchange, "simulate", Buffer.from(JSON.stringify({ v: 1, type: "job", unitId, attempt: 1, kind: "simulate", payload })), { persistent: true });

it("does not run a job forever when its report cannot be encoded", async () => {
  job(1, { deep: true });
  job(2, {});
  await waitFor("the next job to run", () => runs.get(2) === 1, 10_000);
  // Either the agent reports the failure itself (the unit ends) or dead-letters the job, but
  // it does not hand it back to run again and again.
  await new Promise((r) => setTimeout(r, 4_000));
  expect(runs.get(1)).toBe(1);
  expect(agent.stats.deadLettered + (await queueDepth(conn, place.topology.dead))).toBeGreaterThanOrEqual(1);
});
