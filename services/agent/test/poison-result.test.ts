import { beforeAll, expect, it } from "vitest";
import type { Channel } from "amqplib";
import { testLogger, useTestPlace, rawChannel, waitFor } from "@rtb/testing";
import { loadAgentConfig, startAgent, type Handler } from "@rtb/agent";

// A job whose result the agent cannot encode (here: nested too deep for JSON.stringify) was
// handed back after a second and run again, forever. Now no retry could report it either, so
// the attempt ends as a permanent error saying so, and the agent goes on with the next job.
const place = useTestPlace();
let ch: Channel;
const runs = new Map<number, number>();

beforeAll(async () => {
  ({ ch } = await rawChannel(place));
  const handler: Handler = async (job) => {
    runs.set(job.unitId, (runs.get(job.unitId) ?? 0) + 1);
    if ((job.payload as { deep?: boolean }).deep) {
      let result: unknown = [];
      for (let i = 0; i < 20_000; i++) result = [result];
      return result;
    }
    return { ok: true };
  };
  place.own(await startAgent({ ...loadAgentConfig(place.env), RTB_AGENT_ID: "agent-poison" }, testLogger("agent"), new Map([["simulate", handler]])));
});

const job = (unitId: number, payload: object) =>
  ch.publish(place.topology.jobsExchange, "simulate", Buffer.from(JSON.stringify({ v: 1, type: "job", unitId, attempt: 1, kind: "simulate", payload })), { persistent: true });

it("ends the attempt as a permanent error when its result cannot be encoded, and goes on", async () => {
  job(1, { deep: true });
  job(2, {});
  await waitFor("the next job to run", () => runs.get(2) === 1, 10_000);
  const reports: { unitId: number; status: string; error?: { message: string; retryable: boolean } }[] = [];
  await waitFor("both jobs' final reports", async () => {
    for (let m = await ch.get(place.topology.inbox, { noAck: true }); m; m = await ch.get(place.topology.inbox, { noAck: true })) {
      reports.push(...(JSON.parse(m.content.toString()) as { updates: typeof reports }).updates);
    }
    return reports.filter((r) => r.status !== "processing").length >= 2;
  }, 10_000);
  expect(reports.find((r) => r.unitId === 1 && r.status !== "processing")).toMatchObject({
    status: "error",
    error: { retryable: false, message: expect.stringMatching(/cannot be encoded as JSON/) },
  });
  expect(reports.find((r) => r.unitId === 2 && r.status !== "processing")).toMatchObject({ status: "success" });
  // Not handed back to run again and again.
  await new Promise((r) => setTimeout(r, 2_000));
  expect(runs.get(1)).toBe(1);
});
