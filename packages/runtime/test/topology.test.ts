import { afterAll, beforeAll, expect, it } from "vitest";
import type { Channel, ChannelModel } from "amqplib";
import { z } from "zod";
import { assertTopology, brokerConfig, connectBrokerFromConfig, loadConfig, type Topology } from "@rtb/runtime";
import { createTestPlace, destroyTestPlace, queueDepth, rawBroker, testLogger, waitFor, type QueueType, type TestPlace } from "@rtb/testing";

/** What each queue type declares and does differently, on the real broker. */
let conn: ChannelModel;
const places: TestPlace[] = [];

beforeAll(async () => {
  conn = await rawBroker();
});
afterAll(async () => {
  for (const p of places) await destroyTestPlace(p, []);
  await conn?.close();
});

async function place(queueType: QueueType): Promise<TestPlace> {
  const p = await createTestPlace({ queueType });
  places.push(p);
  return p;
}

/** The broker's answer to redeclaring `queue` as `type`: null if it agreed, else its message. */
async function redeclareAs(queue: string, type: QueueType, sameArgs: Record<string, unknown>): Promise<string | null> {
  const ch = await conn.createChannel();
  ch.on("error", () => {});
  try {
    await ch.assertQueue(queue, { durable: true, arguments: { ...sameArgs, "x-queue-type": type } });
    await ch.close();
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

async function channel(): Promise<Channel> {
  const ch = await conn.createChannel();
  ch.on("error", () => {});
  return ch;
}

it("defaults RTB_BROKER_QUEUE_TYPE to quorum", () => {
  expect(loadConfig(z.object(brokerConfig), {}).RTB_BROKER_QUEUE_TYPE).toBe("quorum");
});

it.each(["classic", "quorum"] as const)("declares %s work queues when RTB_BROKER_QUEUE_TYPE says so", async (type) => {
  const p = await place(type);
  const broker = await connectBrokerFromConfig(loadConfig(z.object(brokerConfig), p.env), testLogger("runtime"));
  await broker.close();
  const other = type === "quorum" ? "classic" : "quorum";
  // RabbitMQ refuses a declare that differs only in type, which is how a queue's type shows over AMQP.
  const t = p.topology;
  const work = { "x-dead-letter-exchange": t.deadExchange, ...(type === "quorum" ? { "x-delivery-limit": t.deliveryLimit } : {}) };
  const queues: [string, Record<string, unknown>][] = [[t.box, { ...work, "x-single-active-consumer": true }], [t.inbox, work], [t.dead, {}]];
  for (const [q, args] of queues) {
    expect(await redeclareAs(q, type, args)).toBeNull();
    expect(await redeclareAs(q, other, args)).toMatch(/PRECONDITION_FAILED - inequivalent arg 'x-queue-type'/);
  }
});

async function nackRequeue(queue: string, times: number): Promise<void> {
  const ch = await channel();
  for (let i = 0; i < times; i++) {
    const msg = await waitFor(`a delivery from ${queue}`, async () => (await ch.get(queue)) || null, 5_000);
    ch.nack(msg, false, true);
  }
  await ch.close();
}

it("quorum: dead-letters a message redelivered past RTB_BROKER_DELIVERY_LIMIT, so a poison message cannot loop forever", async () => {
  const p = await place("quorum");
  const t: Topology = { ...p.topology, deliveryLimit: 2 };
  const ch = await channel();
  await assertTopology(ch, t);
  ch.sendToQueue(t.inbox, Buffer.from("poison"), { persistent: true });
  await ch.close();
  // Delivered, requeued, twice: the third requeue passes the limit of 2.
  await nackRequeue(t.inbox, 3);
  await waitFor("the poison message in the dead-letter queue", async () => (await queueDepth(conn, t.dead)) === 1, 5_000);
  expect(await queueDepth(conn, t.inbox)).toBe(0);
});

it("classic: has no delivery limit; a requeued message stays on its queue", async () => {
  const p = await place("classic");
  const ch = await channel();
  await assertTopology(ch, p.topology);
  ch.sendToQueue(p.topology.inbox, Buffer.from("poison"), { persistent: true });
  await ch.close();
  await nackRequeue(p.topology.inbox, 25);
  expect(await queueDepth(conn, p.topology.inbox)).toBe(1);
  expect(await queueDepth(conn, p.topology.dead)).toBe(0);
});

it("refuses a queue type change, naming the queue, both types and RTB_BROKER_QUEUE_TYPE", async () => {
  const p = await place("classic");
  const ch = await channel();
  await assertTopology(ch, p.topology);
  await ch.close();
  const failure = await connectBrokerFromConfig(loadConfig(z.object(brokerConfig), { ...p.env, RTB_BROKER_QUEUE_TYPE: "quorum" }), testLogger("runtime")).then(
    (b) => b.close().then(() => null),
    (err: Error) => err.message,
  );
  expect(failure).toMatch(/refused the topology: queue "[^"]+" \(vhost "[^"]*"\) exists as a classic queue, but RTB_BROKER_QUEUE_TYPE asks for quorum/);
  expect(failure).toMatch(/Set RTB_BROKER_QUEUE_TYPE=classic to keep running/);
});
