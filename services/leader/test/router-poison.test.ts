import { beforeAll, expect, it } from "vitest";
import type { Channel, ChannelModel } from "amqplib";
import { assertJobQueue } from "@rtb/runtime";
import { type StatusUpdate } from "@rtb/protocol";
import { queueDepth, testLogger, useTestPlace, waitFor, rawChannel, drainStatusReports } from "@rtb/testing";
import { loadLeaderConfig, startLeaderService, type LeaderService } from "@rtb/leader";

// A dispatch message that passes validation but that the leader fails on every time (here:
// a payload nested too deep for JSON.stringify to write the job) was handed back after a
// second, forever. A failure that is not the broker's dead-letters the message (consumer.ts,
// retryLater), counted as the leader's, and the messages after it are routed.
const place = useTestPlace({ kinds: ["simulate"] });
let leader: LeaderService;
let conn: ChannelModel;
let ch: Channel;

beforeAll(async () => {
  ({ conn, ch } = await rawChannel(place));
  await assertJobQueue(ch, place.topology, "simulate");
  leader = place.own(await startLeaderService(loadLeaderConfig({ ...place.env, RTB_LEADER_ID: "leader-p" }), testLogger("leader")));
});

/** Every status update the leader has reported so far (drains the inbox). */
const reported: StatusUpdate[] = [];
const drainInbox = () => drainStatusReports(ch, place.topology.inbox, reported);

it("dead-letters a dispatch message it cannot route for a reason of its own, and routes the next", async () => {
  const depth = 20_000;
  const deep = JSON.stringify({ v: 1, type: "dispatch", units: [{ unitId: 1, attempt: 1, kind: "simulate", payload: "DEEP" }] }).replace('"DEEP"', "[".repeat(depth) + "]".repeat(depth));
  ch.sendToQueue(place.topology.box, Buffer.from(deep), { persistent: true });
  ch.sendToQueue(place.topology.box, Buffer.from(JSON.stringify({ v: 1, type: "dispatch", units: [{ unitId: 2, attempt: 1, kind: "simulate", payload: {} }] })), { persistent: true });

  await waitFor("the next unit to be routed", async () => (await drainInbox()).some((u) => u.unitId === 2 && u.status === "queued"), 10_000);
  await waitFor("the culprit in the dead queue", async () => (await queueDepth(conn, place.topology.dead)) === 1, 10_000);
  expect(leader.stats.deadLettered).toBe(1);
  expect(reported.some((u) => u.unitId === 1)).toBe(false);
});
