import type { ChannelModel } from "amqplib";
import { beforeAll, describe, expect, it } from "vitest";
import type { ApiService } from "@rtb/api";
import { sql } from "kysely";
import { openTestDb, queueDepth, rawBroker, useTestPlace, waitFor } from "@rtb/testing";
import { call, eventStatuses, getUnit, publishRaw, startApi, statusMessage } from "./support.ts";

// The api alone (no leader, no agents): after /go its 10 seeded units are `dispatched` on
// attempt 1, and this file plays the leader and the agents by publishing raw status messages
// to the inbox. Each test works on its own unit. A long retry backoff keeps a retried unit
// `pending` for the whole file.
const place = useTestPlace();
let api: ApiService;
let conn: ChannelModel;

beforeAll(async () => {
  api = place.own(await startApi(place, { RTB_RETRY_BACKOFF_MS: "600000", RTB_RETRY_BACKOFF_MAX_MS: "600000" }));
  conn = place.own(await rawBroker());
  const go = await call(api, "/go");
  expect(go.body.dispatchedNow).toBe(10);
});

const send = (...bodies: (object | string)[]) => publishRaw(conn, place.topology.inbox, ...bodies);
const ignored = async (reason: string): Promise<number> => (await call(api, "/")).body.reports.ignored[reason] ?? 0;
const untilStatus = (id: number, status: string) => waitFor(`unit ${id} to be ${status}`, async () => (await getUnit(api, id)).status === status);

describe("status reports from the inbox", () => {
  it("takes 'no agent for this kind' only from the leader: from an agent it is an ordinary error", async () => {
    await send(statusMessage([{ unitId: 8, attempt: 1, status: "error", error: { message: "no agent, says an agent", retryable: true, noAgent: true } }]));
    await untilStatus(8, "pending");
    const unit = await getUnit(api, 8);
    // Retried after its backoff like any error, its attempt counted: not waiting for an agent.
    expect(unit).toMatchObject({ maxAttempts: 3, waitingForAgentSince: null });
    expect(unit.notBefore).not.toBeNull();
    expect(unit.events.at(-1)?.detail).toMatchObject({ retryable: true, retryAt: expect.any(String) });
  });

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
    // The dead queue's depth in GET / is read at most once a second.
    const body = await waitFor("GET / to show both", async () => {
      const b = (await call(api, "/")).body;
      return b.deadLetters.waiting === deadBefore + 2 ? b : null;
    });
    expect(body.deadLetters.rejectedByThisApi).toEqual({ invalid_status_message: 2 });
    expect(eventStatuses(await getUnit(api, 6))).toEqual(["dispatched", "success"]);
  });
});

describe("the leader's reports", () => {
  it("a leader message with utilization makes GET / show the leader id and its utilization", async () => {
    // The tracker's snapshot is older than the report: reportedAt is the report's own time.
    const utilization = { at: new Date(Date.now() - 60_000).toISOString(), kinds: { simulate: { ready: 3, consumers: 2 } } };
    const at = new Date().toISOString();
    await send(statusMessage([{ unitId: 7, attempt: 1, status: "queued", at } as never], { service: "leader", id: "leader-7" }, { utilization }));
    const leader = await waitFor("GET / to show the leader", async () => (await call(api, "/")).body.leader);
    expect(leader).toMatchObject({ id: "leader-7", utilization, reportedAt: at, activeSince: at });
    expect((await getUnit(api, 7)).status).toBe("queued");
  });
});

describe("who is alive", () => {
  it("a different leader's first report moves activeSince; the same leader's later reports keep it", async () => {
    const report = (id: string, at: Date) =>
      statusMessage([], { service: "leader", id }, { utilization: { at: at.toISOString(), kinds: {} } });
    // Later than the reports before, and in the past by the time they are sent: times later
    // than the api's clock are recorded as its now (apply-status.ts).
    const t0 = new Date();
    await new Promise((r) => setTimeout(r, 600));
    await send(report("leader-a", t0), report("leader-a", new Date(t0.getTime() + 100)));
    await waitFor("leader-a's second report", async () => (await call(api, "/")).body.leader?.reportedAt === new Date(t0.getTime() + 100).toISOString());
    expect((await call(api, "/")).body.leader).toMatchObject({ id: "leader-a", activeSince: t0.toISOString() });

    const t1 = new Date(t0.getTime() + 500);
    await send(report("leader-b", t1), report("leader-a", new Date(t0.getTime() + 200)));
    await waitFor("the standby to be shown active", async () => (await call(api, "/")).body.leader?.id === "leader-b");
    await new Promise((r) => setTimeout(r, 200));
    // The old leader's late report (older than leader-b's) does not take the place back.
    expect((await call(api, "/")).body.leader).toMatchObject({ id: "leader-b", activeSince: t1.toISOString(), reportedAt: t1.toISOString() });
  });

  it("heartbeats list the leaders and agents seen recently, and sum their dead letters per service across restarts", async () => {
    const beat = (service: string, id: string, startedAt: string, deadLettered: number) =>
      statusMessage([], { service, id, startedAt } as never, { counters: { deadLettered } });
    await send(
      beat("agent", "agent-9", "2026-01-01T00:00:00.000Z", 2),
      beat("agent", "agent-9", "2026-01-01T00:00:00.000Z", 1), // redelivered older heartbeat: totals never go down
      beat("agent", "agent-9", "2026-01-02T00:00:00.000Z", 3), // the same agent after a restart
      beat("leader", "leader-9", "2026-01-01T00:00:00.000Z", 4),
    );
    const body = await waitFor("GET / to list the agent's two lifetimes", async () => {
      const b = (await call(api, "/")).body;
      return b.services.agents.filter((a: { id: string }) => a.id === "agent-9").length === 2 && b.services.leaders.length > 0 ? b : null;
    });
    expect(body.services.agents.filter((a: { id: string }) => a.id === "agent-9").map((a: { deadLettered: number }) => a.deadLettered)).toEqual([3, 2]);
    expect(body.services.leaders).toContainEqual(expect.objectContaining({ id: "leader-9", deadLettered: 4 }));
    expect(body.deadLetters.byService).toMatchObject({ agent: 5, leader: 4 });
  });

  it("commits in groups: the reports arriving while a batch is applied are applied together next, not one by one", async () => {
    const { db } = place.own(openTestDb(place));
    const batches = async () => {
      const text = await (await api.app.request("/metrics")).text();
      const read = (name: string) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text)?.[1] ?? NaN);
      return { count: read("rtb_inbox_batch_messages_count"), sum: read("rtb_inbox_batch_messages_sum") };
    };
    const before = await batches();
    // Unit 9's row locked: the batch carrying its report waits inside its transaction.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let locked!: () => void;
    const isLocked = new Promise<void>((r) => (locked = r));
    const holder = db.transaction().execute(async (trx) => {
      await sql`SELECT 1 FROM units WHERE id = 9 FOR UPDATE`.execute(trx);
      locked();
      await held;
    });
    await isLocked;
    await send(statusMessage([{ unitId: 9, attempt: 1, status: "processing" }]));
    await waitFor("the first batch to wait for the lock", async () => {
      const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted`.execute(db);
      return rows[0]!.n > 0;
    });
    // Thirty messages while that batch is applied: all delivered (none ready in the inbox) and held.
    await send(...Array.from({ length: 30 }, () => statusMessage([{ unitId: 10, attempt: 1, status: "processing" }])));
    await waitFor("the thirty to reach the api", async () => (await queueDepth(conn, place.topology.inbox)) === 0);
    release();
    await holder;
    await untilStatus(9, "processing");
    await untilStatus(10, "processing");
    const after = await waitFor("31 messages applied", async () => {
      const b = await batches();
      return b.sum - before.sum >= 31 ? b : null;
    });
    // One batch for unit 9's message, one for the thirty.
    expect(after.sum - before.sum).toBe(31);
    expect(after.count - before.count).toBe(2);
  });
});
