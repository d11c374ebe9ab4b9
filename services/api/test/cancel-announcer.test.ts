import type { Channel } from "amqplib";
import { beforeAll, expect, it } from "vitest";
import { createCancelAnnouncer } from "@rtb/api";
import { CancelMessage, parseMessage } from "@rtb/protocol";
import { BrokerUnavailableError, createPublisher, type Publisher } from "@rtb/runtime";
import { capturingLogger, rawChannel, testLogger, useTestPlace, waitFor, openTestBroker } from "@rtb/testing";

/**
 * A cancel the broker did not confirm (a blip on the api's publishing connection) is announced
 * again in the background, so a handler still running hears it once the broker is back, not
 * only when it next reports. The broker and the control exchange are real; the publisher fails
 * the first publishes the test says, then passes through.
 */
const place = useTestPlace();
let publisher: Publisher;
let ch: Channel;
let queue: string;

beforeAll(async () => {
  ({ ch } = await rawChannel(place));
  ({ queue } = await ch.assertQueue("", { exclusive: true, autoDelete: true, durable: false, arguments: { "x-queue-type": "classic" } }));
  await ch.bindQueue(queue, place.topology.controlExchange, "");
  const broker = await openTestBroker(place, testLogger("api"));
  publisher = await createPublisher(broker, "test", testLogger("api"));
});

/** The real publisher, failing its next `n` publishes as a lost channel would. */
function failing(n: number): Publisher & { attempts: number } {
  const p = {
    attempts: 0,
    publish: (...args: Parameters<Publisher["publish"]>) => (++p.attempts <= n ? Promise.reject(new BrokerUnavailableError("no broker channel to publish on")) : publisher.publish(...args)),
    onReturn: publisher.onReturn,
    drain: publisher.drain,
  };
  return p;
}

async function heard(): Promise<{ unitId: number; attempt: number }[]> {
  const out: { unitId: number; attempt: number }[] = [];
  for (let m = await ch.get(queue, { noAck: true }); m; m = await ch.get(queue, { noAck: true })) {
    const parsed = parseMessage(CancelMessage, m.content);
    if (parsed.ok) out.push(...parsed.value.units);
  }
  return out;
}

const announcer = (p: Publisher, retryMs: number[]) => {
  const { logger, lines } = capturingLogger("api");
  const a = createCancelAnnouncer({ publisher: p, topology: place.topology, maxMessageBytes: 1 << 20, logger, retryMs });
  place.own(a);
  return { a, lines };
};

it("announces again what the broker did not confirm, until it does", async () => {
  await heard();
  const p = failing(2);
  const { a, lines } = announcer(p, [50, 50, 50]);
  expect(await a.announce([{ unitId: 7, attempt: 2 }], "cancel")).toBe(false);
  const got = await waitFor("the cancel on the control exchange", async () => {
    const units = await heard();
    return units.length > 0 ? units : null;
  }, 5_000);
  expect(got).toEqual([{ unitId: 7, attempt: 2 }]);
  expect(p.attempts).toBe(3);
  expect(lines.map((l) => l.msg)).toContain("cancel announced to the agents after a retry");
});

it("gives up after its retries, saying so, and stop() drops the retries still to come", async () => {
  await heard();
  const never = failing(Number.POSITIVE_INFINITY);
  const { a, lines } = announcer(never, [20, 20]);
  expect(await a.announce([{ unitId: 8, attempt: 1 }], "cancel")).toBe(false);
  await waitFor("the give-up", async () => lines.some((l) => /still not announced after its retries/.test(l.msg)));
  expect(never.attempts).toBe(3);

  const later = failing(1);
  const b = announcer(later, [60_000]);
  expect(await b.a.announce([{ unitId: 9, attempt: 1 }], "cancel")).toBe(false);
  await b.a.stop();
  expect(later.attempts).toBe(1);
  expect(await heard()).toEqual([]);
});
