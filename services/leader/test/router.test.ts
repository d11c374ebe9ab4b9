import { beforeAll, expect, it } from "vitest";
import type { Channel, ChannelModel } from "amqplib";
import { assertJobQueue } from "@rtb/runtime";
import { JobMessage, parseMessage, type StatusUpdate } from "@rtb/protocol";
import { createTestPlace, destroyTestPlace, queueDepth, testLogger, useTestPlace, waitFor, rawChannel, drainStatusReports } from "@rtb/testing";
import { loadLeaderConfig, startLeaderService, type LeaderService } from "@rtb/leader";

/** The leader alone, on the real broker: what it routes, what it reports, what it rejects. */
const place = useTestPlace({ kinds: ["simulate"] });
let leader: LeaderService;
let conn: ChannelModel;
let ch: Channel;

beforeAll(async () => {
  ({ conn, ch } = await rawChannel(place));
  await assertJobQueue(ch, place.topology, "simulate"); // an agent's queue, without the agent
  leader = place.own(await startLeaderService(loadLeaderConfig({ ...place.env, RTB_LEADER_ID: "leader-t" }), testLogger("leader")));
});

const dispatch = (units: unknown[]) =>
  ch.sendToQueue(place.topology.box, Buffer.from(JSON.stringify({ v: 1, type: "dispatch", units })), { persistent: true });

/** Every status update the leader has reported so far (drains the inbox). */
const reported: StatusUpdate[] = [];
const drainInbox = () => drainStatusReports(ch, place.topology.inbox, reported);

it("routes one job per unit into jobs.<kind> and reports each unit queued", async () => {
  dispatch([
    { unitId: 1, attempt: 1, kind: "simulate", payload: { n: 1 } },
    { unitId: 2, attempt: 3, kind: "simulate", payload: null },
  ]);
  await waitFor("two queued reports", async () => (await drainInbox()).filter((u) => u.status === "queued").length === 2);
  const jobs = [];
  for (let m = await ch.get(place.topology.jobQueue("simulate"), { noAck: true }); m; m = await ch.get(place.topology.jobQueue("simulate"), { noAck: true })) {
    jobs.push(parseMessage(JobMessage, m.content));
  }
  expect(jobs).toEqual([
    { ok: true, value: { v: 1, type: "job", unitId: 1, attempt: 1, kind: "simulate", payload: { n: 1 } } },
    { ok: true, value: { v: 1, type: "job", unitId: 2, attempt: 3, kind: "simulate", payload: null } },
  ]);
  expect(reported.find((u) => u.unitId === 2)).toMatchObject({ status: "queued", attempt: 3 });
});

it("reports a kind no agent consumes as a retryable error, naming the kind", async () => {
  dispatch([{ unitId: 3, attempt: 1, kind: "nobody", payload: {} }]);
  const update = await waitFor("the error report", async () => (await drainInbox()).find((u) => u.unitId === 3));
  expect(update).toMatchObject({ status: "error", error: { retryable: true, message: expect.stringContaining('no agent consumes kind "nobody"') } });
});

it("rejects one invalid unit as a permanent error without holding back the valid ones beside it", async () => {
  dispatch([
    { unitId: 4, attempt: 1, kind: "simulate", payload: {} },
    { unitId: 5, attempt: 2, kind: "bad kind!", payload: {} },
  ]);
  await waitFor("both reports", async () => (await drainInbox()).filter((u) => u.unitId === 4 || u.unitId === 5).length === 2);
  expect(reported.find((u) => u.unitId === 4)).toMatchObject({ status: "queued" });
  expect(reported.find((u) => u.unitId === 5)).toMatchObject({ status: "error", attempt: 2, error: { retryable: false, message: expect.stringContaining("kind") } });
});

it("dead-letters a malformed dispatch message and keeps consuming", async () => {
  const deadBefore = await queueDepth(conn, place.topology.dead);
  ch.sendToQueue(place.topology.box, Buffer.from("{not json"), { persistent: true });
  ch.sendToQueue(place.topology.box, Buffer.from(JSON.stringify({ v: 2, type: "dispatch", units: [] })), { persistent: true });
  dispatch([{ unitId: 6, attempt: 1, kind: "simulate", payload: {} }]);
  await waitFor("the next valid message to be routed", async () => (await drainInbox()).some((u) => u.unitId === 6));
  await waitFor("both bad messages in the dead queue", async () => (await queueDepth(conn, place.topology.dead)) === deadBefore + 2);
  expect(leader.stats.deadLettered).toBe(2);
});

it("refuses at once, saying why, to start on a broker whose outbox was declared with other arguments", async () => {
  const other = await createTestPlace();
  const c = await conn.createChannel();
  // An outbox from another installation: classic, without single active consumer.
  await c.assertQueue(other.topology.box, { durable: true });
  await c.close();
  try {
    const failure = await startLeaderService(loadLeaderConfig({ ...other.env, RTB_CONNECT_TIMEOUT_MS: "30000" }), testLogger("leader")).then(
      () => null,
      (err: Error) => err,
    );
    // Not "cannot reach RabbitMQ" after RTB_CONNECT_TIMEOUT_MS: retrying cannot fix it.
    expect(failure?.message).toMatch(/refused the topology: .*PRECONDITION_FAILED.*check RTB_BROKER_QUEUE_TYPE/);
  } finally {
    await destroyTestPlace(other);
  }
});
