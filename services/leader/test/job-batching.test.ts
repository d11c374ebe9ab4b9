import { beforeAll, describe, expect, it } from "vitest";
import type { Channel } from "amqplib";
import { assertJobQueue } from "@rtb/runtime";
import { jobUnits, parseJob, type StatusUpdate } from "@rtb/protocol";
import { drainStatusReports, rawChannel, testLogger, useTestPlace, waitFor } from "@rtb/testing";
import { ConfigError } from "@rtb/runtime";
import { MAX_JOB_UNITS } from "@rtb/protocol";
import { loadLeaderConfig, startLeaderService, unitsPerJob } from "@rtb/leader";

describe("RTB_JOB_MAX_UNITS", () => {
  it(`takes 1 to ${MAX_JOB_UNITS} (default 50) and refuses one past, naming the variable`, () => {
    expect(loadLeaderConfig({}).RTB_JOB_MAX_UNITS).toBe(50);
    expect(loadLeaderConfig({ RTB_JOB_MAX_UNITS: String(MAX_JOB_UNITS) }).RTB_JOB_MAX_UNITS).toBe(MAX_JOB_UNITS);
    for (const bad of [String(MAX_JOB_UNITS + 1), "0"]) {
      const err = (() => {
        try {
          loadLeaderConfig({ RTB_JOB_MAX_UNITS: bad });
        } catch (e) {
          return e;
        }
      })();
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).problems[0]).toMatchObject({ variable: "RTB_JOB_MAX_UNITS", value: bad });
    }
  });
});

describe("unitsPerJob", () => {
  it("sends one unit per job while a queue is shallow or unread, more as it deepens, never more than the maximum", () => {
    expect(unitsPerJob(undefined, 50)).toBe(1);
    expect(unitsPerJob({ ready: 100, consumers: 0 }, 50)).toBe(1);
    expect(unitsPerJob({ ready: 0, consumers: 2 }, 50)).toBe(1);
    expect(unitsPerJob({ ready: 3, consumers: 4 }, 50)).toBe(1);
    expect(unitsPerJob({ ready: 12, consumers: 2 }, 50)).toBe(6);
    expect(unitsPerJob({ ready: 10_000, consumers: 2 }, 50)).toBe(50);
    expect(unitsPerJob({ ready: 10_000, consumers: 2 }, 1)).toBe(1);
  });
});

/** The leader on the real broker, with a job queue kept deep by a consumer that never acks. */
const KIND = "deep";
const place = useTestPlace({ kinds: [KIND] });
let ch: Channel;

beforeAll(async () => {
  ({ ch } = await rawChannel(place));
  await assertJobQueue(ch, place.topology, KIND);
  // One consumer holding one job, and 20 more waiting: deep for one consumer.
  const agent = await (await rawChannel(place)).conn.createChannel();
  await agent.prefetch(1);
  await agent.consume(place.topology.jobQueue(KIND), () => {}, { noAck: false });
  for (let i = 0; i < 21; i++) ch.sendToQueue(place.topology.jobQueue(KIND), Buffer.from(JSON.stringify({ v: 1, type: "job", unitId: 900_000 + i, attempt: 1, kind: KIND, payload: null })), { persistent: true });
  place.own(await startLeaderService(loadLeaderConfig({ ...place.env, RTB_LEADER_ID: "leader-batch", RTB_JOB_MAX_UNITS: "6" }), testLogger("leader")));
});

const dispatch = (units: unknown[]) => ch.sendToQueue(place.topology.box, Buffer.from(JSON.stringify({ v: 1, type: "dispatch", units })), { persistent: true });
const reported: StatusUpdate[] = [];

it("batches the units of a deep queue's kind into jobs of at most RTB_JOB_MAX_UNITS, each unit in exactly one, each reported queued", async () => {
  // The first routing reads the queue (no reading yet: one unit per job); the next ones batch.
  dispatch([{ unitId: 1, attempt: 1, kind: KIND, payload: {} }]);
  await waitFor("the first unit queued", async () => (await drainStatusReports(ch, place.topology.inbox, reported)).some((u) => u.unitId === 1));
  await new Promise((r) => setTimeout(r, 200));
  const units = Array.from({ length: 40 }, (_, i) => ({ unitId: 100 + i, attempt: 2, kind: KIND, payload: { i } }));
  dispatch(units);
  await waitFor("40 queued reports", async () => (await drainStatusReports(ch, place.topology.inbox, reported)).filter((u) => u.unitId >= 100 && u.status === "queued").length === 40);

  const jobs = [];
  for (let m = await ch.get(place.topology.jobQueue(KIND), { noAck: true }); m; m = await ch.get(place.topology.jobQueue(KIND), { noAck: true })) {
    const parsed = parseJob(m.content);
    expect(parsed.ok).toBe(true);
    if (parsed.ok) jobs.push(parsed.value);
  }
  const ours = jobs.map(jobUnits).filter((u) => u.some((x) => x.unitId >= 100 && x.unitId < 900_000));
  // 21 waiting for 1 consumer: as deep as it gets, so every job is full (6) but the last.
  expect(ours.map((u) => u.length)).toEqual([6, 6, 6, 6, 6, 6, 4]);
  expect(ours.flat().map((u) => u.unitId)).toEqual(units.map((u) => u.unitId));
  expect(ours.flat()[5]).toEqual({ unitId: 105, attempt: 2, payload: { i: 5 } });
});
