import { beforeEach, describe, expect, it } from "vitest";
import { enqueueUnits, type DbHandle } from "@rtb/db";
import { maxPayloadBytes, maxResultBytes } from "@rtb/runtime";
import type { Handler } from "@rtb/agent";
import { openTestDb, startSystem, useTestPlace, waitFor, type System } from "@rtb/testing";

/**
 * Every documented limit, end to end (api -> outbox -> leader -> jobs -> agent -> inbox):
 * at the maximum it travels and succeeds, one past it is refused with a clear answer. A
 * small RTB_BROKER_MAX_MESSAGE_BYTES keeps the messages small.
 */
const LIMIT = 65_536;
const MAX_BATCH = 50;
const env = { RTB_BROKER_MAX_MESSAGE_BYTES: String(LIMIT), RTB_API_MAX_BATCH: String(MAX_BATCH), RTB_RETRY_BACKOFF_MS: "20", RTB_SEED_UNITS: "0" };
const LONG_KIND = "k".repeat(100);

/** A JSON string whose JSON takes exactly `bytes` bytes. */
const jsonOf = (bytes: number) => "p".repeat(bytes - 2);
const handlers = new Map<string, Handler>([
  // The payload's size as the agent received it: proof that it arrived whole.
  ["measure", async (job) => Buffer.byteLength(JSON.stringify(job.payload))],
  // A result of the size asked for.
  ["produce", async (job) => jsonOf((job.payload as { bytes: number }).bytes)],
  [LONG_KIND, async () => "long"],
]);

const place = useTestPlace({ perTest: true, kinds: ["measure", "produce", LONG_KIND] });
let h: DbHandle;
let system: System | undefined;

beforeEach(() => {
  h = place.own(openTestDb(place));
});

const post = (body: unknown) =>
  system!.api.app.request("/units", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
const body = (res: Response): Promise<any> => res.json();
const finished = (ids: number[]) =>
  waitFor("the units to finish", async () => {
    const units = await Promise.all(ids.map((id) => system!.get(`/units/${id}`)));
    return units.every((u) => u.status === "success" || u.status === "error") ? units : null;
  });

describe("message size limits", () => {
  it("a payload of exactly the max travels to the agent whole; one byte more is 413 naming payload and the limit", async () => {
    system = place.own(await startSystem(place, env, { agents: 1, handlers }));
    const max = maxPayloadBytes(LIMIT);
    const ok = await post({ kind: "measure", payload: jsonOf(max) });
    expect(ok.status).toBe(201);
    const over = await post({ kind: "measure", payload: jsonOf(max + 1) });
    expect(over.status).toBe(413);
    expect(await body(over)).toMatchObject({ error: "payload_too_large", field: "payload", limit: max });
    // In a batch, the entry is named, and nothing of the batch is written.
    const batch = Array.from({ length: 8 }, (_, i) => ({ kind: "measure", payload: jsonOf(i === 7 ? max + 1 : 10) }));
    const refused = await post(batch);
    expect(refused.status).toBe(413);
    expect(await body(refused)).toMatchObject({ field: "[7].payload", limit: max });
    expect((await system.get("/")).total).toBe(1);

    const { unit } = await body(ok);
    await system.get("/go");
    const [done] = await finished([unit.id]);
    expect(done).toMatchObject({ status: "success", result: max, attempt: 1 });
  });

  it("units whose payloads fill several messages are cut into messages that fit, and all succeed", async () => {
    system = place.own(await startSystem(place, env, { agents: 2, handlers }));
    // Three of these fill more than one message: a top-up of 30 needs at least 10 messages.
    const size = Math.floor(maxPayloadBytes(LIMIT) / 2.5);
    const res = await post(Array.from({ length: 30 }, () => ({ kind: "measure", payload: jsonOf(size) })));
    expect(res.status).toBe(201);
    const ids = (await body(res)).units.map((u: { id: number }) => u.id);
    await system.get("/go");
    const units = await finished(ids);
    expect(units.map((u) => [u.status, u.result])).toEqual(ids.map(() => ["success", size]));
    expect((await system.get("/")).publishes).toMatchObject({ unconfirmed: 0, refused: 0 });
  });

  it("a result of exactly the max is reported; one byte more ends that attempt as a permanent error, and the agent carries on", async () => {
    system = place.own(await startSystem(place, env, { agents: 1, handlers }));
    // The agent's source: its id (agent-1, from startSystem) and a start time of fixed width.
    const max = maxResultBytes(LIMIT, { service: "agent", id: "agent-1", startedAt: new Date().toISOString() });
    const res = await post([
      { kind: "produce", payload: { bytes: max } },
      { kind: "produce", payload: { bytes: max + 1 }, maxAttempts: 3 },
      { kind: "produce", payload: { bytes: 10 } },
    ]);
    const ids = (await body(res)).units.map((u: { id: number }) => u.id);
    await system.get("/go");
    const [atMax, over, after] = await finished(ids);
    expect(atMax.status).toBe("success");
    expect(Buffer.byteLength(JSON.stringify(atMax.result))).toBe(max);
    // Permanent: one attempt of three, no retry.
    expect(over).toMatchObject({ status: "error", attempt: 1 });
    expect(over.lastError).toMatch(/result too large to report.*RTB_BROKER_MAX_MESSAGE_BYTES/);
    expect(after.status).toBe("success");
  });

  it("a unit that no message can carry (the limit lowered after it was enqueued) ends as a permanent error, counted; the others travel", async () => {
    // Enqueued under a larger limit, straight into the database, as an older api would have.
    const [big, small] = await enqueueUnits(h.db, [
      { kind: "measure", group: "g", priority: 0, payload: jsonOf(LIMIT), ref: null, maxAttempts: 3 },
      { kind: "measure", group: "g", priority: 0, payload: jsonOf(100), ref: null, maxAttempts: 3 },
    ]);
    system = place.own(await startSystem(place, env, { agents: 1, handlers }));
    await system.get("/go");
    const [refused, travelled] = await finished([big!.id, small!.id]);
    expect(refused).toMatchObject({ status: "error", attempt: 1 });
    expect(refused.lastError).toMatch(/refused: its dispatch message .* larger than a message may be \(65536 bytes: RTB_BROKER_MAX_MESSAGE_BYTES/);
    expect(travelled).toMatchObject({ status: "success", result: 100 });
    const state = await system.get("/");
    expect(state.publishes).toMatchObject({ refused: 1, unconfirmed: 0 });
    expect(state.counts.dispatched).toBe(0);
    const metrics = await (await system.api.app.request("/metrics")).text();
    expect(metrics).toMatch(/^rtb_units_refused_total\{[^}]*\} 1$/m);
  });
});

describe("request limits", () => {
  it(`a batch of RTB_API_MAX_BATCH units travels; one more is 400`, async () => {
    system = place.own(await startSystem(place, env, { agents: 2, handlers }));
    const over = await post(Array.from({ length: MAX_BATCH + 1 }, () => ({ kind: "measure" })));
    expect(over.status).toBe(400);
    expect(await body(over)).toMatchObject({ field: "body", message: expect.stringContaining("RTB_API_MAX_BATCH") });
    const res = await post(Array.from({ length: MAX_BATCH }, () => ({ kind: "measure" })));
    expect(res.status).toBe(201);
    await system.get("/go");
    const units = await finished((await body(res)).units.map((u: { id: number }) => u.id));
    expect(units.filter((u) => u.status === "success").length).toBe(MAX_BATCH);
  });

  it("a kind of 100 characters and a group and ref of 200 travel; one character more is 400 naming the field", async () => {
    system = place.own(await startSystem(place, env, { agents: 1, handlers }));
    const longest = { kind: LONG_KIND, group: "g".repeat(200), ref: "r".repeat(200) };
    for (const [field, value] of [["kind", "k".repeat(101)], ["group", "g".repeat(201)], ["ref", "r".repeat(201)]] as const) {
      const res = await post({ ...longest, [field]: value });
      expect(res.status, field).toBe(400);
      expect((await body(res)).field).toBe(field);
    }
    const res = await post(longest);
    expect(res.status).toBe(201);
    const { unit } = await body(res);
    await system.get("/go");
    const [done] = await finished([unit.id]);
    expect(done).toMatchObject({ status: "success", result: "long", group: "g".repeat(200), ref: "r".repeat(200) });
  });
});
