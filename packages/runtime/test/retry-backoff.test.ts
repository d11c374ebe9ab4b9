import { beforeAll, expect, it } from "vitest";
import type { Channel, ChannelModel, ConsumeMessage } from "amqplib";
import { RETRY_PAUSE_MAX_MS, retryPause, startConsumer, type Broker } from "@rtb/runtime";
import { queueDepth, rawChannel, testLogger, useTestPlace, waitFor, openTestBroker } from "@rtb/testing";

/**
 * A message that fails transiently (the broker recovering) is handed back after a pause that
 * doubles with each failure: on a quorum queue every hand-back spends one of its deliveries
 * (x-delivery-limit 20), so a fixed pause would dead-letter it after 20 pauses of outage.
 */
const place = useTestPlace();
let broker: Broker;
let conn: ChannelModel;
let ch: Channel;

beforeAll(async () => {
  ({ conn, ch } = await rawChannel(place));
  broker = await openTestBroker(place, testLogger("runtime"));
});

const withDeliveries = (n: number) => ({ properties: { headers: { "x-delivery-count": n } } }) as unknown as ConsumeMessage;

it("doubles the pause with each failure of the message, from the base up to the cap", () => {
  expect([1, 2, 3, 4, 5, 6, 7].map((n) => retryPause(1_000, n))).toEqual([1_000, 2_000, 4_000, 8_000, 16_000, RETRY_PAUSE_MAX_MS, RETRY_PAUSE_MAX_MS]);
  expect(retryPause(1_000, 1_000_000)).toBe(RETRY_PAUSE_MAX_MS);
  // The broker's count of earlier deliveries (other consumers' failures, a lost node) counts too.
  expect(retryPause(1_000, 1, withDeliveries(3))).toBe(8_000);
  expect(retryPause(1_000, 5, withDeliveries(1))).toBe(16_000);
  // RabbitMQ 4.3 counts requeues in x-acquired-count, not x-delivery-count; anything else is no count.
  const acquired = { properties: { headers: { "x-delivery-count": 0, "x-acquired-count": 2 } } } as unknown as ConsumeMessage;
  expect(retryPause(1_000, 1, acquired)).toBe(4_000);
  expect(retryPause(1_000, 1, withDeliveries("3" as never))).toBe(1_000);
  expect(retryPause(1_000, 1, withDeliveries(-4))).toBe(1_000);
  // The 20 deliveries of a quorum queue's default limit last minutes, not 20 s.
  const total = Array.from({ length: 20 }, (_, i) => retryPause(1_000, i + 1)).reduce((a, b) => a + b, 0);
  expect(total).toBeGreaterThan(8 * 60_000);
});

it("hands a transiently failing message back after longer and longer pauses, and it is never dead-lettered for it", async () => {
  const q = place.topology.inbox;
  await ch.purgeQueue(q);
  const times: number[] = [];
  const base = 100;
  const consumer = await startConsumer({
    broker,
    name: "test",
    queue: q,
    prefetch: 1,
    logger: testLogger("runtime"),
    retryPauseMs: base,
    onDelivery: (d) => {
      times.push(Date.now());
      if (times.length < 5) return d.retryLater(new Error("channel closed"));
      d.ack();
    },
  });
  ch.sendToQueue(q, Buffer.from("x"), { persistent: true, messageId: "m-1" });
  await waitFor("the fifth delivery", async () => times.length >= 5, 20_000);
  await consumer.stop(1_000);
  const gaps = times.slice(1).map((t, i) => t - times[i]!);
  // At least the doubled pause each time (a fixed pause would keep every gap near `base`).
  gaps.forEach((gap, i) => expect(gap, `gap ${i + 1} of ${JSON.stringify(gaps)}`).toBeGreaterThanOrEqual(base * 2 ** i - 5));
  expect(await queueDepth(conn, q)).toBe(0);
  expect(await queueDepth(conn, place.topology.dead)).toBe(0);
});
