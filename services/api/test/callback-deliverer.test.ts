import type { ChannelModel } from "amqplib";
import { sql } from "kysely";
import { afterEach, describe, expect, it } from "vitest";
import { startCallbackDeliverer, type CallbackSettings } from "@rtb/api";
import { claimCallbacks, unitCallbacks, type ClaimedCallback, type Db } from "@rtb/db";
import { metricValue, parsePrometheusText, Registry } from "@rtb/runtime";
import { capturingLogger, openTestDb, rawBroker, testWebhookSecret, useTestPlace, useWebhookReceivers, waitFor } from "@rtb/testing";
import { call, getUnit, publishRaw, startApi, statusMessage } from "./support.ts";

/**
 * The delivery loop (callback-deliverer.ts) against a real database and a real receiver:
 * what it records when the database fails after a 2xx, what a claimer whose lease lapsed counts,
 * and what happens to deliveries while callbacks are off. A database per test: the loops claim
 * every due row of theirs.
 */
const place = useTestPlace({ perTest: true });
const secret = testWebhookSecret();

const receiver = useWebhookReceivers(secret);

const settings = (over: Partial<CallbackSettings> = {}): CallbackSettings => ({
  allowed: [{ host: "127.0.0.1", wildcard: false, port: null }],
  secret,
  maxAttempts: 3,
  timeoutMs: 300,
  concurrency: 2,
  hostConcurrency: 2,
  backoffMs: 20,
  backoffMaxMs: 50,
  pollMs: 20,
  ...over,
});

/** A deliverer of its own (its own registry and captured log), stopped with the place. */
function deliverer(db: Db, over: Partial<CallbackSettings> = {}) {
  const registry = new Registry();
  const { logger, lines } = capturingLogger("api");
  const d = place.own(startCallbackDeliverer({ db, logger, registry, settings: settings(over) }));
  const metric = async (name: string, labels: Record<string, string> = {}) => metricValue(parsePrometheusText(await registry.metrics()), name, labels);
  return { d, lines, registry, metric };
}

/** A unit that has just ended (success) with `url` as its callback: its delivery is pending. */
async function ended(db: Db, url: string): Promise<number> {
  const { rows } = await sql<{ id: string }>`
    INSERT INTO units (kind, group_name, payload, status, attempt, max_attempts, dispatched_at, callback_url)
    VALUES ('k', 'g', '{}', 'processing', 1, 3, now(), ${url}) RETURNING id`.execute(db);
  const id = Number(rows[0]!.id);
  await sql`UPDATE units SET status = 'success' WHERE id = ${id}`.execute(db);
  return id;
}

const only = async (db: Db, unitId: number) => {
  const all = await unitCallbacks(db, unitId);
  expect(all).toHaveLength(1);
  return all[0]!;
};

describe("the callback deliverer", () => {
  it("a database error after a 2xx is no failed attempt: the row stays pending and is sent again once its lease lapses", async () => {
    const db = place.own(openTestDb(place)).db;
    const r = await receiver();
    // A real database error, from the statement that records the delivery, until dropped.
    await sql`CREATE FUNCTION test_refuse_delivered() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'test: recording deliveries refused'; END $$`.execute(db);
    await sql`CREATE TRIGGER test_refuse_delivered BEFORE UPDATE ON callbacks FOR EACH ROW WHEN (NEW.state = 'delivered') EXECUTE FUNCTION test_refuse_delivered()`.execute(db);
    const id = await ended(db, `${r.url}/hook`);
    // One attempt at most: a failure recorded would give the delivery up at once.
    const a = deliverer(db, { maxAttempts: 1 });
    // Its outcome: the failure to record it logged, or (what must not happen) a failed attempt recorded.
    await waitFor("the attempt's end", async () => a.lines.some((l) => /cannot record a delivery's outcome/.test(l.msg) && /recording deliveries refused/.test(l.err)) || (await only(db, id)).history.length > 0);
    expect(r.received.map((x) => x.answered)).toEqual([200]);
    expect(await only(db, id)).toMatchObject({ state: "pending", attempts: 1, history: [] });
    for (const outcome of ["delivered", "failed", "given_up"]) expect(await a.metric("rtb_callback_deliveries_total", { outcome }), outcome).toBe(0);

    await sql`DROP TRIGGER test_refuse_delivered ON callbacks`.execute(db);
    // The lease (RTB_WEBHOOK_TIMEOUT_MS + 5 s) lapses; the same loop claims it again.
    const cb = await waitFor("the delivery to be sent again and recorded", async () => {
      const c = await only(db, id);
      return c.state === "delivered" ? c : null;
    }, 20_000);
    expect(cb).toMatchObject({ attempts: 2, history: [{ outcome: "delivered", statusCode: 200 }] });
    expect(r.received.map((x) => x.id)).toEqual([cb.webhookId, cb.webhookId]);
    expect(await a.metric("rtb_callback_deliveries_total", { outcome: "delivered" })).toBe(1);
    expect(await a.metric("rtb_callback_delivery_seconds_count")).toBe(1);
  });

  it("a claimer whose lease lapsed and whose 2xx comes after another claim delivered it counts nothing: delivered once in the metrics", async () => {
    const db = place.own(openTestDb(place)).db;
    const r = await receiver();
    let answerFirst!: (status: number) => void;
    const first = new Promise<number>((resolve) => (answerFirst = resolve));
    r.answer = () => (r.received.length === 0 ? first : 200);
    const id = await ended(db, `${r.url}/hook`);
    // A's request is held by the receiver, well within its timeout.
    const a = deliverer(db, { timeoutMs: 30_000 });
    await waitFor("A's request to be held", () => r.hanging() === 1);
    // As if A had been paused past its lease (a GC pause, a frozen VM): the row is due again.
    await sql`UPDATE callbacks SET next_at = now() WHERE unit_id = ${id}`.execute(db);
    const b = deliverer(db, { timeoutMs: 30_000 });
    await waitFor("B to deliver it", async () => (await only(db, id)).state === "delivered");
    answerFirst(200);
    await waitFor("A to settle its answer", () => a.lines.some((l) => /callback delivered|after another claim settled it/.test(l.msg)));

    expect(r.received.map((x) => x.answered)).toEqual([200, 200]);
    expect(new Set(r.received.map((x) => x.id)).size).toBe(1);
    const cb = await only(db, id);
    expect(cb).toMatchObject({ state: "delivered", attempts: 2, history: [{ outcome: "delivered", statusCode: 200 }] });
    const total = async (name: string, labels: Record<string, string> = {}) => ((await a.metric(name, labels)) ?? 0) + ((await b.metric(name, labels)) ?? 0);
    expect(await total("rtb_callback_deliveries_total", { outcome: "delivered" })).toBe(1);
    expect(await total("rtb_callback_delivery_seconds_count")).toBe(1);
    expect(await b.metric("rtb_callback_deliveries_total", { outcome: "delivered" })).toBe(1);
  });

  it("with callbacks off, a delivery waits its retries (nothing sent) and goes out when they are turned on within them", async () => {
    const db = place.own(openTestDb(place)).db;
    const r = await receiver();
    const id = await ended(db, `${r.url}/hook`);
    const off = deliverer(db, { allowed: [], secret: undefined, maxAttempts: 10, backoffMs: 300, backoffMaxMs: 300 });
    await waitFor("a failed attempt while off", async () => (await only(db, id)).history.length >= 1);
    await off.d.stop();
    const waiting = await only(db, id);
    expect(waiting.state).toBe("pending");
    expect(waiting.history.every((h) => h.outcome === "failed" && h.error === "callbacks are off: RTB_WEBHOOK_ALLOWED_HOSTS is empty" && h.statusCode === undefined)).toBe(true);
    expect(r.received).toEqual([]);
    expect(await off.metric("rtb_callbacks_pending")).toBe(1);

    deliverer(db);
    const cb = await waitFor("the delivery once callbacks are on", async () => {
      const c = await only(db, id);
      return c.state === "delivered" ? c : null;
    });
    expect(cb.history.at(-1)).toMatchObject({ outcome: "delivered", statusCode: 200 });
    expect(r.received.map((x) => x.id)).toEqual([cb.webhookId]);
  });
});

describe("the per-host cap (RTB_WEBHOOK_HOST_CONCURRENCY)", () => {
  const claim = async (db: Db, limit: number, perHost: number, inFlight: Record<string, number> = {}, more: { after?: string | null; hosts?: number } = {}) =>
    claimCallbacks(db, limit, 60_000, { perHost, inFlight: new Map(Object.entries(inFlight)), after: more.after ?? null, ...(more.hosts ? { hosts: more.hosts } : {}) });
  const hosts = (cs: { host: string }[]) => cs.map((c) => c.host).sort();
  const dueAgain = (db: Db) => sql`UPDATE callbacks SET next_at = now() - interval '1 second' WHERE state = 'pending'`.execute(db);

  it("claims at most the cap per host, counting the requests open to it, and skips a host at its cap", async () => {
    const db = place.own(openTestDb(place)).db;
    for (let i = 0; i < 7; i++) await ended(db, `https://a.example:8443/hook/${i}`);
    for (let i = 0; i < 2; i++) await ended(db, `https://b.example/hook/${i}`);
    // Seven due for a.example:8443 before b.example's two: 2 of a, then b's.
    expect(hosts((await claim(db, 10, 2)).claimed)).toEqual(["a.example:8443", "a.example:8443", "b.example", "b.example"]);
    await dueAgain(db);
    // One request open to a: one more of it; two open: none, and b's still come.
    expect(hosts((await claim(db, 10, 2, { "a.example:8443": 1 })).claimed)).toEqual(["a.example:8443", "b.example", "b.example"]);
    await dueAgain(db);
    expect(hosts((await claim(db, 10, 2, { "a.example:8443": 2 })).claimed)).toEqual(["b.example", "b.example"]);
    await dueAgain(db);
    // The limit still binds, oldest first; without a cap, as many as asked for.
    expect(hosts((await claim(db, 1, 2)).claimed)).toEqual(["a.example:8443"]);
    await dueAgain(db);
    expect((await claimCallbacks(db, 5, 60_000)).claimed).toHaveLength(5);
  });

  it("keys a host as fetch reaches it: URLs are stored as the WHATWG parser writes them", async () => {
    const db = place.own(openTestDb(place)).db;
    const api = place.own(await startApi(place, { RTB_SEED_UNITS: "0", RTB_WEBHOOK_ALLOWED_HOSTS: "hooks.test,127.0.0.1", RTB_WEBHOOK_SECRET: secret }));
    const written = ["HTTPS://Hooks.TEST:443/a", "https://hooks.test/b", "http:hooks.test/c", "http://hooks%2Etest/d", "http://2130706433:8080/e"];
    const res = await call(api, "/units", "POST", written.map((callbackUrl) => ({ kind: "k", callbackUrl })));
    expect(res.status).toBe(201);
    const stored: string[] = await Promise.all(res.body.units.map(async (u: any) => (await call(api, `/units/${u.id}`)).body.callbackUrl));
    expect(stored).toEqual(["https://hooks.test/a", "https://hooks.test/b", "http://hooks.test/c", "http://hooks.test/d", "http://127.0.0.1:8080/e"]);
    for (const url of stored) await ended(db, url);
    const { rows } = await sql<{ url: string; host: string }>`SELECT url, host FROM callbacks ORDER BY id`.execute(db);
    expect(rows.map((r) => r.host)).toEqual(stored.map((u: string) => new URL(u).host));
    // The length is that of the stored form: 2019 characters written, 12019 once percent-encoded.
    const long = await call(api, "/units", "POST", { kind: "k", callbackUrl: `https://hooks.test/${"é".repeat(2000)}` });
    expect(long).toMatchObject({ status: 400, body: { field: "callbackUrl", message: expect.stringContaining("at most 2048 characters as the URL parser writes it (percent-encoded: 12019)") } });
  });

  it("past the hosts one claim looks at, the next claim goes on from the last one", async () => {
    const db = place.own(openTestDb(place)).db;
    for (const h of ["a", "b", "c", "d", "e"]) await ended(db, `https://${h}.example/hook`);
    const first = await claim(db, 10, 1, {}, { hosts: 2 });
    expect({ hosts: hosts(first.claimed), after: first.after }).toEqual({ hosts: ["a.example", "b.example"], after: "b.example" });
    const second = await claim(db, 10, 1, {}, { after: first.after, hosts: 2 });
    expect({ hosts: hosts(second.claimed), after: second.after }).toEqual({ hosts: ["c.example", "d.example"], after: "d.example" });
    const third = await claim(db, 10, 1, {}, { after: second.after, hosts: 2 });
    expect({ hosts: hosts(third.claimed), after: third.after }).toEqual({ hosts: ["e.example"], after: null });
  });

  it("a slow receiver with many deliveries holds only its share of the slots: another host's go out meanwhile", async () => {
    const db = place.own(openTestDb(place)).db;
    const slow = await receiver();
    const fast = await receiver();
    slow.answer = () => "hang";
    for (let i = 0; i < 10; i++) await ended(db, `${slow.url}/hook/${i}`);
    const others: number[] = [];
    for (let i = 0; i < 3; i++) others.push(await ended(db, `${fast.url}/hook/${i}`));
    // 4 slots, 2 per host: without the cap the slow host's 10 (due first) would hold all 4 until the timeout.
    deliverer(db, { concurrency: 4, hostConcurrency: 2, timeoutMs: 30_000 });
    await waitFor("the other host's deliveries", async () => {
      for (const id of others) if ((await only(db, id)).state !== "delivered") return false;
      return true;
    }, 10_000);
    expect(fast.received.map((x) => x.answered)).toEqual([200, 200, 200]);
    expect(slow.hanging()).toBe(2);
    expect(slow.received).toHaveLength(2);
  });
});

describe("two apis claiming at once", () => {
  it("take different deliveries, and between them every one due (FOR UPDATE SKIP LOCKED)", async () => {
    const a = place.own(openTestDb(place)).db;
    const b = place.own(openTestDb(place)).db;
    for (let round = 0; round < 5; round++) {
      await sql`DELETE FROM callbacks`.execute(a);
      for (let i = 0; i < 20; i++) await ended(a, `http://127.0.0.1:9/hook/${round}/${i}`);
      // Each from its own pool, in parallel: 8 + 8 of the 20 due, none claimed twice.
      const [x, y] = (await Promise.all([claimCallbacks(a, 8, 60_000), claimCallbacks(b, 8, 60_000)])).map((c) => c.claimed) as [ClaimedCallback[], ClaimedCallback[]];
      const ids = [...x, ...y].map((c) => c.id);
      expect(new Set(ids).size, `round ${round}`).toBe(ids.length);
      expect(ids, `round ${round}`).toHaveLength(16);
      expect([...x, ...y].every((c) => c.attempt === 1)).toBe(true);
      // What is left is still due, for either: the last 4.
      const { claimed: rest } = await claimCallbacks(b, 8, 60_000);
      expect(rest).toHaveLength(4);
      expect(new Set([...ids, ...rest.map((c) => c.id)]).size).toBe(20);
    }
  });

  it("spread over many hosts, the second fills up while the first still holds its rows", async () => {
    const a = place.own(openTestDb(place)).db;
    const b = place.own(openTestDb(place)).db;
    for (let i = 0; i < 20; i++) await ended(a, `https://h${i}.example/hook`);
    const cap = { perHost: 4, inFlight: new Map<string, number>(), after: null };
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let first: ClaimedCallback[] = [];
    let claimedInside!: () => void;
    const inside = new Promise<void>((resolve) => (claimedInside = resolve));
    // A claims in a transaction it keeps open: its rows stay locked while B claims.
    const txA = a.transaction().execute(async (trx) => {
      first = (await claimCallbacks(trx, 8, 60_000, cap)).claimed;
      claimedInside();
      await held;
    });
    await inside;
    const second = (await claimCallbacks(b, 8, 60_000, cap)).claimed;
    release();
    await txA;
    expect(first).toHaveLength(8);
    expect(second).toHaveLength(8);
    expect(new Set([...first, ...second].map((c) => c.id)).size).toBe(16);
  });
});

describe("an api with callbacks off (RTB_WEBHOOK_ALLOWED_HOSTS empty)", () => {
  let conn: ChannelModel | undefined;
  afterEach(async () => {
    await conn?.close();
    conn = undefined;
  });

  it("gives up the deliveries of a group that kept its URL after RTB_WEBHOOK_MAX_ATTEMPTS, sending nothing, and serves rtb_callbacks_pending", async () => {
    const r = await receiver();
    const api = place.own(await startApi(place, { RTB_SEED_UNITS: "0", RTB_WEBHOOK_MAX_ATTEMPTS: "3", RTB_WEBHOOK_BACKOFF_MS: "20", RTB_WEBHOOK_BACKOFF_MAX_MS: "50" }));
    conn = await rawBroker();
    const metric = async (name: string, labels: Record<string, string> = {}) => metricValue(parsePrometheusText(await (await api.app.request("/metrics")).text()), name, labels);
    expect(await metric("rtb_callbacks_pending")).toBe(0);
    // Named while callbacks were on: PUT /groups refuses one now.
    expect((await call(api, "/groups/kept", "PUT", { callbackUrl: `${r.url}/kept` })).status).toBe(400);
    const db = place.own(openTestDb(place)).db;
    await sql`INSERT INTO unit_groups (name, callback_url) VALUES ('kept', ${`${r.url}/kept`})`.execute(db);

    expect((await call(api, "/go")).status).toBe(200);
    const res = await call(api, "/units", "POST", { kind: "hook", group: "kept" });
    expect(res.status).toBe(201);
    const id = res.body.unit.id as number;
    await waitFor(`unit ${id} to be dispatched`, async () => (await getUnit(api, id)).status === "dispatched");
    await publishRaw(conn, place.topology.inbox, statusMessage([{ unitId: id, attempt: 1, status: "success" }]));

    const [cb] = await waitFor(`unit ${id}'s delivery to be given up`, async () => {
      const cbs = (await call(api, `/units/${id}`)).body.callbacks as any[];
      return cbs.length === 1 && cbs[0].state === "given_up" ? cbs : null;
    });
    expect(cb.attempts).toBe(3);
    expect(cb.history.map((h: any) => h.outcome)).toEqual(["failed", "failed", "given_up"]);
    expect(cb.history.every((h: any) => h.error === "callbacks are off: RTB_WEBHOOK_ALLOWED_HOSTS is empty")).toBe(true);
    expect(r.received).toEqual([]);
    expect(await metric("rtb_callbacks_pending")).toBe(0);
    expect(await metric("rtb_callback_deliveries_total", { outcome: "given_up" })).toBe(1);
    expect(await metric("rtb_callback_deliveries_total", { outcome: "failed" })).toBe(2);
  });
});
