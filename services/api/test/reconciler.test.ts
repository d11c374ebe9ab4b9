import type { ChannelModel } from "amqplib";
import { sql } from "kysely";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { ApiService } from "@rtb/api";
import { builtinHandlers, loadAgentConfig, startAgent } from "@rtb/agent";
import type { DbHandle } from "@rtb/db";
import { loadLeaderConfig, startLeaderService } from "@rtb/leader";
import { assertJobQueue } from "@rtb/runtime";
import { DispatchMessage } from "@rtb/protocol";
import { openTestDb, queueDepth, rawBroker, testLogger, useTestPlace, waitFor, type TestPlace } from "@rtb/testing";
import { call, eventStatuses, getUnit, publishRaw, startApi, statusMessage } from "./support.ts";

// Deterministic reconciler passes: the cron never fires (support.ts), the tests call tick().
// Each describe has its own place (database + broker names), so each starts from 10 fresh units.
let conn: ChannelModel;
const running: { stop(): Promise<void> }[] = [];

beforeAll(async () => {
  conn = await rawBroker();
});
afterAll(async () => {
  await conn?.close();
});
afterEach(async () => {
  for (const s of running.splice(0).reverse()) await s.stop();
});

/** A place and a database handle per describe; `start()` an api on it (stopped after each test). */
function setup(env: Record<string, string>) {
  const place = useTestPlace();
  const ctx = {
    place,
    db: undefined as unknown as DbHandle,
    async start(): Promise<ApiService> {
      const api = await startApi(place, env);
      running.push(api);
      return api;
    },
  };
  beforeAll(() => {
    ctx.db = place.own(openTestDb(place));
  });
  return ctx;
}

/** Units in `status` whose `column` is older than `ms` by the database's clock. */
const olderThan = async (db: DbHandle, status: string, column: "dispatched_at" | "updated_at", ms: number) =>
  Number(
    (await sql<{ n: number }>`SELECT count(*) AS n FROM units WHERE status = ${status} AND ${sql.ref(column)} < now() - make_interval(secs => ${ms / 1000})`.execute(db.db))
      .rows[0]?.n,
  );

/** Every ready outbox message's units, as `id:attempt`; the messages go back to the queue. */
async function peekOutbox(place: TestPlace): Promise<string[]> {
  // A consumer, not basic.get: a quorum queue with single active consumer refuses basic.get (405 RESOURCE_LOCKED).
  const ready = await queueDepth(conn, place.topology.box);
  const ch = await conn.createChannel();
  const seen: string[] = [];
  let taken = 0;
  try {
    if (ready > 0) {
      const { consumerTag } = await ch.consume(place.topology.box, (msg) => {
        if (!msg) return;
        seen.push(...DispatchMessage.parse(JSON.parse(msg.content.toString())).units.map((u) => `${u.unitId}:${u.attempt}`));
        taken++;
      });
      await waitFor("every ready outbox message", () => taken === ready, 10_000);
      await ch.cancel(consumerTag);
    }
    ch.nackAll(true);
  } finally {
    await ch.close();
  }
  return seen.sort();
}

const dispatchedUnits = async (db: DbHandle) =>
  (await db.db.selectFrom("units").select(["id", "attempt"]).where("status", "=", "dispatched").execute()).map((r) => `${r.id}:${r.attempt}`).sort();

describe("a lost outbox publish", () => {
  const ctx = setup({ RTB_BROADCAST_MAX_QUEUE: "3", RTB_DISPATCH_TIMEOUT_MS: "100" });

  it("is published again by the reconciler with the same units and attempts, and then every unit reaches success", async () => {
    const api = await ctx.start();
    expect((await call(api, "/go")).body.dispatchedNow).toBe(3);
    const claimed = await dispatchedUnits(ctx.db);
    expect(claimed).toHaveLength(3);

    // The message is lost: the units are `dispatched` in the database, the outbox is empty.
    const ch = await conn.createChannel();
    await ch.purgeQueue(ctx.place.topology.box);
    await ch.close();
    expect(await queueDepth(conn, ctx.place.topology.box)).toBe(0);

    await waitFor("the dispatch timeout to pass", async () => (await olderThan(ctx.db, "dispatched", "dispatched_at", 100)) === 3);
    await api.reconciler.tick();
    expect(await peekOutbox(ctx.place)).toEqual(claimed);
    expect(api.stats.republished).toBe(3);
    expect(await dispatchedUnits(ctx.db)).toEqual(claimed);

    const agentConfig = loadAgentConfig({ ...ctx.place.env, RTB_AGENT_ID: "agent-r", RTB_AGENT_WORK_MIN_MS: "0", RTB_AGENT_WORK_MAX_MS: "5", RTB_AGENT_ERROR_RATE: "0" });
    running.push(await startAgent(agentConfig, testLogger("agent"), builtinHandlers(agentConfig)));
    running.push(await startLeaderService(loadLeaderConfig({ ...ctx.place.env, RTB_LEADER_ID: "leader-r" }), testLogger("leader")));

    await waitFor("all 10 units to succeed", async () => (await call(api, "/")).body.counts.success === 10);
    for (const id of claimed.map((c) => Number(c.split(":")[0]))) {
      const unit = await getUnit(api, id);
      expect(unit.attempt).toBe(1);
      // The leader's `queued` and the agent's `processing` race to the inbox: either may be ignored.
      const statuses = eventStatuses(unit);
      expect(statuses[0]).toBe("dispatched");
      expect(statuses.at(-1)).toBe("success");
      expect(statuses.filter((s) => s === "success" || s === "error")).toEqual(["success"]);
    }
  });
});

describe("units still waiting in the outbox", () => {
  const ctx = setup({ RTB_BROADCAST_MAX_QUEUE: "3", RTB_DISPATCH_TIMEOUT_MS: "100" });

  it("are not published again while the outbox holds ready messages (no flooding)", async () => {
    const api = await ctx.start();
    await call(api, "/go");
    const depth = await queueDepth(conn, ctx.place.topology.box);
    expect(depth).toBe(1);
    const before = await ctx.db.db.selectFrom("units").select(["id", "dispatched_at"]).where("status", "=", "dispatched").orderBy("id").execute();

    await waitFor("the dispatch timeout to pass", async () => (await olderThan(ctx.db, "dispatched", "dispatched_at", 100)) === 3);
    await api.reconciler.tick();
    await api.reconciler.tick();

    expect(await queueDepth(conn, ctx.place.topology.box)).toBe(depth);
    expect(api.stats.republished).toBe(0);
    const after = await ctx.db.db.selectFrom("units").select(["id", "dispatched_at"]).where("status", "=", "dispatched").orderBy("id").execute();
    expect(after).toEqual(before);
  });
});

describe("an attempt stuck in processing", () => {
  const ctx = setup({ RTB_PROCESSING_TIMEOUT_MS: "100", RTB_RETRY_BACKOFF_MS: "600000", RTB_RETRY_BACKOFF_MAX_MS: "600000" });

  it("is recorded as a retryable error by the reconciler and sent back to pending; a late success for it changes nothing", async () => {
    const api = await ctx.start();
    await call(api, "/go");
    await publishRaw(conn, ctx.place.topology.inbox, statusMessage([{ unitId: 1, attempt: 1, status: "queued" }, { unitId: 1, attempt: 1, status: "processing" }]));
    await waitFor("unit 1 to be processing", async () => (await getUnit(api, 1)).status === "processing");

    await waitFor("the processing timeout to pass", async () => (await olderThan(ctx.db, "processing", "updated_at", 100)) === 1);
    await api.reconciler.tick();

    let unit = await getUnit(api, 1);
    expect(unit).toMatchObject({ status: "pending", attempt: 1 });
    expect(unit.notBefore).not.toBeNull();
    expect(eventStatuses(unit)).toEqual(["dispatched", "queued", "processing", "error"]);
    expect(unit.events[3]).toMatchObject({ attempt: 1, source: "reconciler", detail: { retryable: true } });
    expect(unit.events[3]?.detail.retryAt).toEqual(expect.any(String));
    // Only the stuck unit: the others were never processing.
    expect((await getUnit(api, 2)).status).toBe("dispatched");

    await publishRaw(conn, ctx.place.topology.inbox, statusMessage([{ unitId: 1, attempt: 1, status: "success", result: "late" }]));
    await waitFor("the late success to be ignored", async () => (await call(api, "/")).body.reports.ignored.not_in_flight === 1);
    unit = await getUnit(api, 1);
    expect(unit).toMatchObject({ status: "pending", attempt: 1, result: null });
    expect(eventStatuses(unit)).toEqual(["dispatched", "queued", "processing", "error"]);
  });
});

describe("a job redelivered to another agent", () => {
  const ctx = setup({ RTB_PROCESSING_TIMEOUT_MS: "1500" });

  it("restarts the processing timeout with the new agent's report, so its run is not expired on the dead agent's clock", async () => {
    const api = await ctx.start();
    await call(api, "/go");
    await publishRaw(conn, ctx.place.topology.inbox, statusMessage([{ unitId: 1, attempt: 1, status: "processing" }], { service: "agent", id: "dies" }));
    await waitFor("unit 1 to be processing", async () => (await getUnit(api, 1)).status === "processing");
    // Most of the timeout passes on the first agent, which then dies; the job goes to another.
    await waitFor("1 s in processing", async () => (await olderThan(ctx.db, "processing", "updated_at", 1_000)) === 1, 5_000);
    await publishRaw(conn, ctx.place.topology.inbox, statusMessage([{ unitId: 1, attempt: 1, status: "processing" }], { service: "agent", id: "takes-over" }));
    await waitFor("the timeout to restart", async () => (await olderThan(ctx.db, "processing", "updated_at", 1_000)) === 0);
    await new Promise((r) => setTimeout(r, 600)); // past the first agent's deadline
    await api.reconciler.tick();
    const unit = await getUnit(api, 1);
    expect(unit.status).toBe("processing");
    expect(eventStatuses(unit)).toEqual(["dispatched", "processing"]);

    // A new agent that then hangs is still caught once its own timeout has passed.
    await waitFor("the new run's timeout to pass", async () => (await olderThan(ctx.db, "processing", "updated_at", 1_500)) === 1, 5_000);
    await api.reconciler.tick();
    expect(eventStatuses(await getUnit(api, 1))).toEqual(["dispatched", "processing", "error"]);
  });
});

describe("a queued unit whose job was lost", () => {
  const ctx = setup({ RTB_BROADCAST_MAX_QUEUE: "3", RTB_DISPATCH_TIMEOUT_MS: "100" });

  it("is recorded as a retryable error when its job queue has nothing waiting, but left alone while jobs wait", async () => {
    const api = await ctx.start();
    const leader = await startLeaderService(loadLeaderConfig({ ...ctx.place.env, RTB_LEADER_ID: "leader-t" }), testLogger("leader"));
    running.push(leader);
    // The agents' queue exists (so routing works), but no agent consumes it.
    const ch = await conn.createChannel();
    await assertJobQueue(ch, ctx.place.topology, "simulate");
    await call(api, "/go");
    const queuedIds = async () =>
      (await ctx.db.db.selectFrom("units").select("id").where("status", "=", "queued").orderBy("id").execute()).map((r) => r.id);
    await waitFor("three units queued", async () => (await queuedIds()).length === 3);
    await waitFor("them to be older than the timeout", async () => {
      const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM units WHERE status = 'queued' AND updated_at < now() - interval '150 ms'`.execute(ctx.db.db);
      return rows[0]!.n === 3;
    });

    // Jobs are waiting in jobs.simulate: nothing is lost, nothing changes.
    await api.reconciler.tick();
    const ids = await queuedIds();
    expect(ids).toHaveLength(3);

    // The jobs vanish (a purge, a lost queue): once two passes in a row see no job, the
    // attempt is errored and the unit retried.
    await ch.purgeQueue(ctx.place.topology.jobQueue("simulate"));
    // A quorum queue's message count can lag its purge for a moment: wait until it reads 0.
    await waitFor("the purge to show", async () => (await queueDepth(conn, ctx.place.topology.jobQueue("simulate"))) === 0);
    await api.reconciler.tick();
    expect(await queuedIds()).toEqual(ids);
    await api.reconciler.tick();
    for (const id of ids) {
      const unit = await getUnit(api, id);
      expect(unit.status).toBe("pending");
      expect(unit.events.at(-1)).toMatchObject({ status: "error", attempt: 1, source: "reconciler", detail: { retryable: true, message: expect.stringContaining("job lost") } });
    }
    await ch.close();
  });
});
