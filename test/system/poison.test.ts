import type { ChannelModel } from "amqplib";
import { sql } from "kysely";
import { beforeAll, expect, it } from "vitest";
import { loadAgentConfig, PermanentJobError, startAgent, type Handler } from "@rtb/agent";
import type { DbHandle } from "@rtb/db";
import { checkSystem } from "@rtb/api";
import { openTestDb, queueDepth, rawBroker, startSystem, testLogger, useTestPlace, waitFor, type System } from "@rtb/testing";

/**
 * Bad messages on every queue, and handlers that misbehave, while the system runs: each bad
 * message is dead-lettered and counted in GET / under the service that rejected it, each bad
 * handler run is an `error` for its attempt, and every consumer keeps going.
 */
let system: System;
let db: DbHandle;
let conn: ChannelModel;

const handlers = new Map<string, Handler>([
  ["ok", async (job) => ({ done: job.unitId })],
  ["throws", async () => {
    throw new PermanentJobError("cannot read this payload");
  }],
  ["crashes", async () => {
    // A synchronous TypeError inside the handler, as a bug would throw.
    return (undefined as unknown as { x: () => void }).x();
  }],
  ["hangs", (job) => new Promise((resolve) => job.signal.addEventListener("abort", () => setTimeout(resolve, 60_000)))],
]);
const place = useTestPlace({ kinds: [...handlers.keys()] });

beforeAll(async () => {
  system = place.own(await startSystem(place, { RTB_SEED_UNITS: "0", RTB_MAX_ATTEMPTS: "1", RTB_HEARTBEAT_MS: "200" }, { agents: 0 }));
  const config = loadAgentConfig({ ...place.env, RTB_AGENT_ID: "agent-p", RTB_AGENT_TIMEOUT_MS: "500", RTB_HEARTBEAT_MS: "200" });
  place.own(await startAgent(config, testLogger("agent"), handlers));
  db = place.own(openTestDb(place));
  conn = place.own(await rawBroker());
});

async function send(queue: string, body: string | object) {
  const ch = await conn.createConfirmChannel();
  ch.sendToQueue(queue, Buffer.from(typeof body === "string" ? body : JSON.stringify(body)), { persistent: true });
  await ch.waitForConfirms();
  await ch.close();
}

it("dead-letters bad messages on the outbox, the job queues and the inbox, counts them per service, and keeps going", async () => {
  const t = place.topology;
  await send(t.box, "not json at all");
  await send(t.box, { v: 1, type: "dispatch", units: "many" });
  await send(t.jobQueue("ok"), { v: 1, type: "job", unitId: "one" });
  await send(t.inbox, { v: 1, type: "status", source: { service: "agent", id: "x" }, updates: [{ unitId: 1, status: "finished" }] });

  await sql`INSERT INTO units (kind, max_attempts, payload) SELECT k, 1, '{}' FROM unnest(ARRAY['ok','ok','throws','crashes','hangs']) AS k`.execute(db.db);
  await system.api.app.request("/go");
  const state = await waitFor("the run to finish and every dead letter to be counted", async () => {
    const s = await system.get("/");
    return s.done && s.deadLetters.byService.leader === 2 && s.deadLetters.byService.agent === 1 && s.deadLetters.byService.api === 1 ? s : null;
  }, 30_000);
  expect(state.deadLetters.waiting).toBe(4);
  expect(await queueDepth(conn, t.dead)).toBe(4);
  expect(state.counts).toMatchObject({ success: 2, error: 3 });

  const errors = await db.db.selectFrom("units").select(["kind", "last_error"]).where("status", "=", "error").orderBy("kind").execute();
  expect(errors).toEqual([
    { kind: "crashes", last_error: expect.stringContaining("Cannot read properties of undefined") },
    { kind: "hangs", last_error: "handler exceeded 500 ms (RTB_AGENT_TIMEOUT_MS)" },
    { kind: "throws", last_error: "cannot read this payload" },
  ]);
  // The agent that ran all of this is alive and still consuming.
  expect(state.services.agents.map((a: { id: string }) => a.id)).toContain("agent-p");
  await sql`INSERT INTO units (kind, max_attempts, payload) VALUES ('ok', 1, '{}')`.execute(db.db);
  await system.api.dispatcher.topUp();
  await waitFor("one more unit to succeed", async () => (await system.get("/")).counts.success === 3);

  const report = await checkSystem({ db: db.db, broker: system.api.broker, maxQueue: 50, dispatchTimeoutMs: 30_000, processingTimeoutMs: 300_000, expectDone: true });
  expect(report.violations).toEqual([]);
});
