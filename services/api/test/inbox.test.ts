import type { ChannelModel } from "amqplib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiService } from "@rtb/api";
import { createTestPlace, destroyTestPlace, queueDepth, rawBroker, waitFor, type TestPlace } from "@rtb/testing";
import { call, eventStatuses, getUnit, publishRaw, startApi, statusMessage } from "./support.ts";

// The api alone (no leader, no agents): after /go its 10 seeded units are `dispatched` on
// attempt 1, and this file plays the leader and the agents by publishing raw status messages
// to the inbox. Each test works on its own unit. A long retry backoff keeps a retried unit
// `pending` for the whole file.
let place: TestPlace;
let api: ApiService;
let conn: ChannelModel;

beforeAll(async () => {
  place = await createTestPlace();
  api = await startApi(place, { RTB_RETRY_BACKOFF_MS: "600000", RTB_RETRY_BACKOFF_MAX_MS: "600000" });
  conn = await rawBroker();
  const go = await call(api, "/go");
  expect(go.body.dispatchedNow).toBe(10);
});

afterAll(async () => {
  await api?.stop();
  await conn?.close();
  if (place) await destroyTestPlace(place);
});

const send = (...bodies: (object | string)[]) => publishRaw(conn, place.topology.inbox, ...bodies);
const ignored = async (reason: string): Promise<number> => (await call(api, "/")).body.reports.ignored[reason] ?? 0;
const untilStatus = (id: number, status: string) => waitFor(`unit ${id} to be ${status}`, async () => (await getUnit(api, id)).status === status);

describe("status reports from the inbox", () => {
  it("applies queued, processing, success of the current attempt, one event each", async () => {
    await send(
      statusMessage([{ unitId: 1, attempt: 1, status: "queued" }], { service: "leader", id: "L" }),
      statusMessage([{ unitId: 1, attempt: 1, status: "processing" }]),
      statusMessage([{ unitId: 1, attempt: 1, status: "success", result: { answer: 42 } }]),
    );
    await untilStatus(1, "success");
    const unit = await getUnit(api, 1);
    expect(unit).toMatchObject({ status: "success", attempt: 1, result: { answer: 42 }, lastError: null });
    expect(eventStatuses(unit)).toEqual(["dispatched", "queued", "processing", "success"]);
    expect(unit.events.map((e) => e.source)).toEqual(["api", "leader:L", "agent:t", "agent:t"]);
    expect(unit.events.every((e) => e.attempt === 1)).toBe(true);
  });

  it("a redelivered success changes nothing: still exactly one success event, and GET / counts the duplicates as ignored", async () => {
    await send(statusMessage([{ unitId: 2, attempt: 1, status: "success", result: "first" }]));
    await untilStatus(2, "success");
    const before = await ignored("not_in_flight");
    await send(
      statusMessage([{ unitId: 2, attempt: 1, status: "success", result: "second" }]),
      statusMessage([{ unitId: 2, attempt: 1, status: "success", result: "third" }]),
    );
    await waitFor("both duplicates to be counted as ignored", async () => (await ignored("not_in_flight")) === before + 2);
    const unit = await getUnit(api, 2);
    expect(eventStatuses(unit)).toEqual(["dispatched", "success"]);
    expect(unit.result).toBe("first");
  });

  it("a report for an attempt other than the unit's current one is ignored as stale", async () => {
    const before = await ignored("stale_attempt");
    await send(statusMessage([{ unitId: 3, attempt: 2, status: "success" }]));
    await waitFor("the stale report to be counted", async () => (await ignored("stale_attempt")) === before + 1);
    const unit = await getUnit(api, 3);
    expect(unit).toMatchObject({ status: "dispatched", attempt: 1 });
    expect(eventStatuses(unit)).toEqual(["dispatched"]);
  });

  it("out of order: a processing report after success leaves the unit success, with no processing event", async () => {
    await send(statusMessage([{ unitId: 4, attempt: 1, status: "success" }]));
    await untilStatus(4, "success");
    const before = await ignored("not_in_flight");
    await send(statusMessage([{ unitId: 4, attempt: 1, status: "processing" }]));
    await waitFor("the late processing report to be counted", async () => (await ignored("not_in_flight")) === before + 1);
    const unit = await getUnit(api, 4);
    expect(unit.status).toBe("success");
    expect(eventStatuses(unit)).toEqual(["dispatched", "success"]);
  });

  it("a retryable error on attempt 1 of 3 sends the unit back to pending, not eligible before its backoff ends", async () => {
    await send(statusMessage([{ unitId: 5, attempt: 1, status: "error", error: { message: "disk full", retryable: true } }]));
    await untilStatus(5, "pending");
    const unit = await getUnit(api, 5);
    expect(unit).toMatchObject({ status: "pending", attempt: 1, maxAttempts: 3, lastError: "disk full" });
    expect(unit.notBefore).not.toBeNull();
    expect(new Date(unit.notBefore!).getTime()).toBeGreaterThan(Date.now());
    expect(eventStatuses(unit)).toEqual(["dispatched", "error"]);
    const error = unit.events[1]!;
    expect(error.detail).toMatchObject({ message: "disk full", retryable: true });
    expect(new Date(error.detail.retryAt).getTime()).toBe(new Date(unit.notBefore!).getTime());
    // Backing off: not in the dispatch order yet.
    expect((await call(api, "/next")).body.units.map((u: { id: number }) => u.id)).not.toContain(5);
  });
});

describe("messages the api cannot use", () => {
  it("dead-letters malformed JSON and schema-invalid messages, counts them, and keeps consuming", async () => {
    const deadBefore = await queueDepth(conn, place.topology.dead);
    await send(
      "{ this is not json",
      statusMessage([{ unitId: 6, attempt: 1, status: "done" }]),
      statusMessage([{ unitId: 6, attempt: 1, status: "success" }]),
    );
    await untilStatus(6, "success");
    await waitFor("2 messages in the dead queue", async () => (await queueDepth(conn, place.topology.dead)) === deadBefore + 2);
    const { body } = await call(api, "/");
    expect(body.deadLetters.rejectedByThisApi).toEqual({ invalid_status_message: 2 });
    expect(body.deadLetters.waiting).toBe(deadBefore + 2);
    expect(eventStatuses(await getUnit(api, 6))).toEqual(["dispatched", "success"]);
  });
});

describe("the leader's reports", () => {
  it("a leader message with utilization makes GET / show the leader id and its utilization", async () => {
    const utilization = { at: new Date().toISOString(), kinds: { simulate: { ready: 3, consumers: 2 } } };
    await send(statusMessage([{ unitId: 7, attempt: 1, status: "queued" }], { service: "leader", id: "leader-7" }, { utilization }));
    const leader = await waitFor("GET / to show the leader", async () => (await call(api, "/")).body.leader);
    expect(leader).toMatchObject({ id: "leader-7", utilization });
    expect(new Date(leader.reportedAt).toISOString()).toBe(utilization.at);
    expect((await getUnit(api, 7)).status).toBe("queued");
  });
});
