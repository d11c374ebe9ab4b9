import { beforeAll, expect, it } from "vitest";
import type { Channel } from "amqplib";
import { assertJobQueue, type Broker } from "@rtb/runtime";
import { testLogger, useTestPlace, waitFor, rawChannel, openTestBroker } from "@rtb/testing";
import { startTracker, type Tracker } from "@rtb/leader";

// The tracker watches what producers name: kinds. Ever new kinds must not grow its checks or
// the utilization every `queued` report carries without bound. At its maximum (here 2) it
// watches every kind with an agent; one past it is routed but not watched; and a kind with no
// queue is dropped, so it takes no room from the kinds that have agents.
let ch: Channel;
let broker: Broker;
let tracker: Tracker;
const KINDS = ["alpha", "beta", "gamma"];
const place = useTestPlace({ kinds: KINDS });

beforeAll(async () => {
  ({ ch } = await rawChannel(place));
  for (const kind of KINDS) await assertJobQueue(ch, place.topology, kind);
  broker = await openTestBroker(place, testLogger("leader"));
  tracker = place.own(startTracker(broker, testLogger("leader"), 100, 2));
});

it("drops kinds without a queue, and watches at most its maximum of kinds", async () => {
  tracker.observe("nobody-consumes-this"); // no agent declared it: no queue
  await new Promise((r) => setTimeout(r, 400));
  expect(Object.keys(tracker.snapshot().kinds)).toEqual([]);
  tracker.observe("alpha");
  tracker.observe("beta"); // the maximum: room, since the kind without a queue was dropped
  tracker.observe("gamma"); // one past it
  await waitFor("alpha and beta watched", () => Object.keys(tracker.snapshot().kinds).length === 2);
  await new Promise((r) => setTimeout(r, 400));
  expect(Object.keys(tracker.snapshot().kinds).sort()).toEqual(["alpha", "beta"]);
  expect(tracker.snapshot().kinds.alpha).toEqual({ ready: 0, consumers: 0 });
});
