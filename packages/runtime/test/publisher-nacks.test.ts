import { expect, it } from "vitest";
import { createPublisher } from "@rtb/runtime";
import { capturingLogger, rawChannel, useTestPlace, waitFor, openTestBroker } from "@rtb/testing";

/**
 * A confirm channel the broker nacks publish after publish is replaced by a new one (the
 * broker bug of publisher.ts's NACK_STREAK, seen in test/disruptive/broker-cluster.test.ts).
 * Here the nacks are real and on purpose: a queue full at its x-max-length with
 * x-overflow reject-publish nacks every publish until a message is taken from it.
 */
const place = useTestPlace();

it("replaces a confirm channel after 3 nacks in a row, and publishes on the new one", async () => {
  const { ch } = await rawChannel(place);
  const queue = `${place.prefix}full`;
  await ch.assertQueue(queue, { durable: false, arguments: { "x-max-length": 1, "x-overflow": "reject-publish" } });
  ch.sendToQueue(queue, Buffer.from("fills it"));
  const { logger, lines } = capturingLogger("runtime", "info");
  const broker = await openTestBroker(place, logger);
  const publisher = await createPublisher(broker, "test", logger);

  for (let i = 0; i < 3; i++) await expect(publisher.publish("", queue, Buffer.from(`nacked ${i}`))).rejects.toThrow("message nacked");
  expect(lines.filter((l) => l.msg === "the broker nacks every publish on this channel; opening another")).toMatchObject([{ publisher: "test", nacks: 3 }]);

  // Room again: the publisher confirms on its new channel (none until it is open).
  await ch.get(queue, { noAck: true });
  await waitFor("a publish confirmed on the new channel", () => publisher.publish("", queue, Buffer.from("accepted")).then(() => true, () => false), 10_000, 100);
  await ch.deleteQueue(queue);
});
