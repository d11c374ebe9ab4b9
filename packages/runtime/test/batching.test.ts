import { beforeAll, beforeEach, expect, it } from "vitest";
import type { Channel, ChannelModel } from "amqplib";
import { ackAll, createPublisher, createStatusReporter, MessageTooLargeError, startConsumer, type Broker, type Delivery } from "@rtb/runtime";
import { parseMessage, StatusMessage } from "@rtb/protocol";
import { queueDepth, testLogger, useTestPlace, waitFor, rawChannel, openTestBroker } from "@rtb/testing";

/** The pieces that let messages and acks carry batches, on the real broker. */
const place = useTestPlace();
let broker: Broker;
let conn: ChannelModel;
let ch: Channel;

beforeAll(async () => {
  ({ conn, ch } = await rawChannel(place));
  broker = await openTestBroker(place, testLogger("runtime"));
});

const inbox = () => place.topology.inbox;

beforeEach(async () => {
  await ch.purgeQueue(inbox());
});

async function take(n: number): Promise<{ deliveries: Delivery[]; stop: (ms: number) => Promise<void> }> {
  const deliveries: Delivery[] = [];
  const consumer = await startConsumer({
    broker,
    name: "test",
    queue: inbox(),
    prefetch: 100,
    logger: testLogger("runtime"),
    // Held until the test settles it: the delivery stays in hand.
    onDelivery: (d) => new Promise<void>((done) => deliveries.push(Object.assign(d, { done }))).then(() => {}),
  });
  await waitFor(`${n} deliveries in hand`, async () => deliveries.length === n);
  return { deliveries, stop: (ms) => consumer.stop(ms) };
}

const release = (ds: Delivery[]) => ds.forEach((d) => (d as Delivery & { done: () => void }).done());

it("acks a run of deliveries at once, and never covers one still in hand", async () => {
  for (let i = 0; i < 10; i++) ch.sendToQueue(inbox(), Buffer.from(String(i)), { persistent: true });
  const { deliveries, stop } = await take(10);
  // 0..5 acked together; 6 stays in hand; 7..9 acked together although 6 lies before them.
  ackAll(deliveries.slice(0, 6));
  ackAll(deliveries.slice(7));
  release(deliveries);
  await stop(1_000);
  // Closing the channel returned only the unsettled delivery (a quorum queue counts a
  // returned message ready a moment after the close, so wait for it to show).
  await waitFor("the unsettled delivery back in the queue", async () => (await queueDepth(conn, inbox())) >= 1);
  expect(await queueDepth(conn, inbox())).toBe(1);
  const left = await ch.get(inbox(), { noAck: true });
  expect(left && left.content.toString()).toBe("6");
});

it("a settled delivery is not acked twice (that would close the channel)", async () => {
  for (let i = 0; i < 3; i++) ch.sendToQueue(inbox(), Buffer.from(String(i)), { persistent: true });
  const { deliveries, stop } = await take(3);
  deliveries[0]!.deadLetter();
  ackAll(deliveries);
  ackAll(deliveries);
  release(deliveries);
  await stop(1_000);
  expect(await queueDepth(conn, inbox())).toBe(0);
  // The dead-lettered one went to the dead queue, not back to the inbox.
  await waitFor("the dead letter", async () => (await queueDepth(conn, place.topology.dead)) === 1);
});

it("the status reporter sends what one turn reported in one message, and holds more back behind its confirms", async () => {
  const publisher = await createPublisher(broker, "test", testLogger("runtime"));
  const reporter = createStatusReporter({
    publisher,
    inbox: inbox(),
    source: () => ({ service: "agent", id: "a-1" }),
    maxInFlight: 1,
    maxMessageBytes: 16 * 1024 * 1024,
  });
  const at = new Date().toISOString();
  const report = (from: number, n: number) =>
    Array.from({ length: n }, (_, i) => reporter.report([{ unitId: from + i, attempt: 1, status: "processing", at }]));
  // Ten in one turn; the next turn, while their message awaits its confirm, twenty more.
  const first = report(1, 10);
  await new Promise((r) => setImmediate(r));
  const second = report(11, 20);
  // Each resolves on its message's confirm: both messages are in the inbox now.
  await Promise.all([...first, ...second]);
  const messages = [];
  for (let m = await ch.get(inbox(), { noAck: true }); m; m = await ch.get(inbox(), { noAck: true })) {
    const parsed = parseMessage(StatusMessage, m.content);
    if (!parsed.ok) throw new Error(parsed.reason);
    messages.push(parsed.value);
  }
  expect(messages.map((m) => m.updates.length)).toEqual([10, 20]);
  expect(messages.flatMap((m) => m.updates.map((u) => u.unitId))).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
  expect(messages[0]!.source).toEqual({ service: "agent", id: "a-1" });
});

it("the status reporter cuts one turn's updates by bytes, so every message stays within the limit", async () => {
  const limit = 65_536;
  const publisher = await createPublisher(broker, "test", testLogger("runtime"), { maxMessageBytes: limit });
  const reporter = createStatusReporter({ publisher, inbox: inbox(), source: () => ({ service: "agent", id: "a-1" }), maxMessageBytes: limit });
  const at = new Date().toISOString();
  // Five updates of ~25 KB each in one turn: one message could carry two, never three.
  const big = "x".repeat(25_000);
  await Promise.all(Array.from({ length: 5 }, (_, i) => reporter.report([{ unitId: i + 1, attempt: 1, status: "success", at, result: big }])));
  const messages: { bytes: number; ids: number[] }[] = [];
  for (let m = await ch.get(inbox(), { noAck: true }); m; m = await ch.get(inbox(), { noAck: true })) {
    const parsed = parseMessage(StatusMessage, m.content);
    if (!parsed.ok) throw new Error(parsed.reason);
    messages.push({ bytes: m.content.length, ids: parsed.value.updates.map((u) => u.unitId) });
  }
  expect(messages.map((m) => m.ids)).toEqual([[1, 2], [3, 4], [5]]);
  for (const m of messages) expect(m.bytes).toBeLessThanOrEqual(limit);
});

it("the status reporter rejects an update it cannot encode, and goes on with the next", async () => {
  const publisher = await createPublisher(broker, "test", testLogger("runtime"), { maxMessageBytes: 65_536 });
  const reporter = createStatusReporter({ publisher, inbox: inbox(), source: () => ({ service: "leader", id: "l-1" }), maxMessageBytes: 65_536 });
  const at = new Date().toISOString();
  // A BigInt is not JSON: before, the throw escaped pump() (an uncaught exception) and the
  // caller's promise never settled.
  await expect(reporter.report([{ unitId: 1, attempt: 1, status: "success", at, result: 1n }])).rejects.toThrow(/BigInt/);
  await reporter.report([{ unitId: 2, attempt: 1, status: "queued", at }]);
  const m = await waitFor("the next report", async () => (await ch.get(inbox(), { noAck: true })) || null);
  const parsed = parseMessage(StatusMessage, m.content);
  expect(parsed.ok && parsed.value.updates.map((u) => u.unitId)).toEqual([2]);
});

it("the publisher refuses a body over the limit unsent, and the channel goes on publishing", async () => {
  const limit = 65_536;
  const publisher = await createPublisher(broker, "test", testLogger("runtime"), { maxMessageBytes: limit });
  await expect(publisher.publish("", inbox(), Buffer.alloc(limit + 1, 0x20))).rejects.toBeInstanceOf(MessageTooLargeError);
  await publisher.publish("", inbox(), Buffer.alloc(limit, 0x20));
  const got = await ch.get(inbox(), { noAck: true });
  expect(got && got.content.length).toBe(limit);
  expect(await ch.get(inbox(), { noAck: true })).toBe(false);
});
