import type { ChannelModel } from "amqplib";
import { beforeAll, describe, expect, it } from "vitest";
import type { ApiService } from "@rtb/api";
import { MAX_CALLBACK_URL_LENGTH } from "@rtb/protocol";
import { rawBroker, testWebhookSecret, useTestPlace, useWebhookReceivers, waitFor } from "@rtb/testing";
import { call, getUnit, publishRaw, startApi, statusMessage } from "./support.ts";

// The api alone (no leader, no agents): units are dispatched on attempt 1 at enqueue, and this
// file plays the agents by publishing raw status reports to the inbox. Every callback goes to a
// real HTTP receiver of the test's own (node:http) that verifies each request with the
// standardwebhooks package; `rejected` must stay empty.
const place = useTestPlace();
const secret = testWebhookSecret();
// Enough that the hanging receiver's 13 deliveries (2 slots, 300 ms each) are not given up
// before it answers again, even on a loaded machine (4 gave them about 8 s, which a loaded
// machine can spend before the receiver answers again: it failed once so).
const MAX_ATTEMPTS = 10;
let api: ApiService;
let conn: ChannelModel;

beforeAll(async () => {
  api = place.own(
    await startApi(place, {
      RTB_SEED_UNITS: "0",
      RTB_BROADCAST_MAX_QUEUE: "1000",
      RTB_WEBHOOK_ALLOWED_HOSTS: "127.0.0.1",
      RTB_WEBHOOK_SECRET: secret,
      RTB_WEBHOOK_MAX_ATTEMPTS: String(MAX_ATTEMPTS),
      RTB_WEBHOOK_TIMEOUT_MS: "300",
      RTB_WEBHOOK_CONCURRENCY: "2",
      RTB_WEBHOOK_BACKOFF_MS: "50",
      RTB_WEBHOOK_BACKOFF_MAX_MS: "200",
    }),
  );
  conn = place.own(await rawBroker());
  expect((await call(api, "/go")).status).toBe(200);
});

const receiver = useWebhookReceivers(secret);

/** POST /units (one unit) and wait for its dispatch. */
async function enqueue(unit: object): Promise<number> {
  const res = await call(api, "/units", "POST", { kind: "hook", ...unit });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  const id = res.body.unit.id as number;
  await waitFor(`unit ${id} to be dispatched`, async () => (await getUnit(api, id)).status === "dispatched");
  return id;
}

const report = (updates: Parameters<typeof statusMessage>[0]) => publishRaw(conn, place.topology.inbox, statusMessage(updates));
const callbacksOf = async (id: number) => (await call(api, `/units/${id}`)).body.callbacks as any[];
const settled = (id: number, state: "delivered" | "given_up") =>
  waitFor(`unit ${id}'s callback to be ${state}`, async () => {
    const cbs = await callbacksOf(id);
    return cbs.length > 0 && cbs.every((c) => c.state === state) ? cbs : null;
  });
const metricsText = async () => (await api.app.request("/metrics")).text();
const counter = (text: string, outcome: string) => Number(new RegExp(`^rtb_callback_deliveries_total\\{[^}]*outcome="${outcome}"[^}]*\\} (\\d+)`, "m").exec(text)?.[1] ?? NaN);

describe("completion callbacks", () => {
  it("success, error and cancelled units each deliver once, signed, with their final state", async () => {
    const r = await receiver();
    const ok = await enqueue({ ref: "cb-ok", callbackUrl: `${r.url}/done?unit=ok` });
    const bad = await enqueue({ callbackUrl: `${r.url}/done`, group: "g-err" });
    const gone = await enqueue({ callbackUrl: `${r.url}/done` });
    await report([
      { unitId: ok, attempt: 1, status: "success", result: { total: 42 } },
      { unitId: bad, attempt: 1, status: "error", error: { message: "card declined", retryable: false } },
    ]);
    expect((await call(api, `/units/${gone}/cancel`, "POST")).status).toBe(200);
    for (const id of [ok, bad, gone]) await settled(id, "delivered");

    // Delivered is recorded after the 2xx: nothing is sent again, so these are all the requests.
    expect(r.received).toHaveLength(3);
    expect(new Set(r.received.map((c) => c.id)).size).toBe(3);
    // A random id per delivery (migration 0014), unique across installations, not a row id.
    for (const c of r.received) expect(c.id).toMatch(/^msg_[0-9a-f]{32}$/);
    // The receiver checked every body against callbackPayload too (afterEach: none rejected); the times are UTC with Z.
    for (const c of r.received) expect([c.body.timestamp, c.body.data.finishedAt]).toEqual([expect.stringMatching(/\.\d{3}Z$/), expect.stringMatching(/\.\d{3}Z$/)]);
    const byUnit = new Map(r.received.map((c) => [c.body.data.id, c]));
    expect(byUnit.get(ok)).toMatchObject({
      path: "/done?unit=ok",
      body: {
        type: "unit.finished",
        data: { id: ok, ref: "cb-ok", kind: "hook", group: "default", status: "success", attempt: 1, result: { total: 42 }, error: null, workflow: null },
      },
    });
    expect(byUnit.get(bad)!.body.data).toMatchObject({ id: bad, group: "g-err", status: "error", attempt: 1, result: null, error: "card declined" });
    expect(byUnit.get(gone)!.body.data).toMatchObject({ id: gone, status: "cancelled", attempt: 1 });
    const unit = await getUnit(api, ok);
    expect(byUnit.get(ok)!.body.data.finishedAt).toBe((unit as any).updatedAt);
    // The timeline shows the delivery under the id the receiver saw.
    const [cb] = await callbacksOf(ok);
    expect(cb).toMatchObject({ webhookId: byUnit.get(ok)!.id, url: `${r.url}/done?unit=ok`, state: "delivered", attempts: 1, history: [{ outcome: "delivered", statusCode: 200 }] });
    expect(counter(await metricsText(), "delivered")).toBeGreaterThanOrEqual(3);
  });

  it("a unit without a callbackUrl takes its group's; its own wins over the group's; PUT null removes the group's", async () => {
    const r = await receiver();
    const put = await call(api, "/groups/hooked", "PUT", { callbackUrl: `${r.url}/group` });
    expect(put).toMatchObject({ status: 200, body: { name: "hooked", callbackUrl: `${r.url}/group` } });
    const plain = await enqueue({ group: "hooked" });
    const own = await enqueue({ group: "hooked", callbackUrl: `${r.url}/own` });
    await report([
      { unitId: plain, attempt: 1, status: "success" },
      { unitId: own, attempt: 1, status: "success" },
    ]);
    await settled(plain, "delivered");
    await settled(own, "delivered");
    expect(r.received.map((c) => [c.body.data.id, c.path]).sort()).toEqual([[plain, "/group"], [own, "/own"]].sort());

    expect((await call(api, "/groups/hooked", "PUT", { callbackUrl: null })).body.callbackUrl).toBeNull();
    const after = await enqueue({ group: "hooked" });
    await report([{ unitId: after, attempt: 1, status: "success" }]);
    await waitFor(`unit ${after} to succeed`, async () => (await getUnit(api, after)).status === "success");
    expect(await callbacksOf(after)).toEqual([]);
  });

  it("a receiver that fails, then is down, then up: retried with backoff and delivered with the same webhook-id", async () => {
    const r = await receiver();
    r.answer = () => 503;
    const id = await enqueue({ callbackUrl: `${r.url}/flaky` });
    await report([{ unitId: id, attempt: 1, status: "success" }]);
    await waitFor("a first attempt, answered 503", () => r.received.length >= 1);
    await r.down();
    await waitFor("an attempt refused while the receiver is down", async () => (await callbacksOf(id))[0]?.history.some((h: any) => h.statusCode === undefined));
    r.answer = () => 200;
    await r.up();
    const [cb] = await settled(id, "delivered");

    const ids = new Set(r.received.map((c) => c.id));
    expect(ids).toEqual(new Set([cb.webhookId]));
    expect(r.received.at(-1)!.answered).toBe(200);
    expect(cb.history[0]).toMatchObject({ outcome: "failed", statusCode: 503, error: expect.stringContaining("answered 503") });
    expect(cb.history.at(-1)).toMatchObject({ outcome: "delivered", statusCode: 200 });
    expect(cb.history.some((h: any) => h.outcome === "failed" && h.statusCode === undefined && /ECONNREFUSED|refused|fetch failed/i.test(h.error))).toBe(true);
    expect(cb.attempts).toBe(cb.history.length);
  });

  it("a receiver that hangs: the attempt times out and is retried, while other units' reports keep being applied", async () => {
    const r = await receiver();
    r.answer = () => "hang";
    // More hanging deliveries than RTB_WEBHOOK_CONCURRENCY (2): every request slot is held.
    const slow = [await enqueue({ callbackUrl: `${r.url}/slow` }), await enqueue({ callbackUrl: `${r.url}/slow` }), await enqueue({ callbackUrl: `${r.url}/slow` })];
    await report(slow.map((unitId) => ({ unitId, attempt: 1, status: "success" as const })));
    await waitFor("the receiver to hold requests", () => r.hanging() >= 1);

    const others: number[] = [];
    for (let i = 0; i < 10; i++) others.push(await enqueue({ callbackUrl: `${r.url}/slow` }));
    await report(others.map((unitId) => ({ unitId, attempt: 1, status: "success" as const })));
    await waitFor("the other units to succeed while the receiver hangs", async () => {
      for (const id of others) if ((await getUnit(api, id)).status !== "success") return false;
      return true;
    });
    // Still hanging, nothing delivered: status application did not wait for the receiver.
    expect(r.received.every((c) => c.answered === "hang")).toBe(true);
    await waitFor("an attempt to time out", async () =>
      (await callbacksOf(slow[0]!))[0]?.history.some((h: any) => h.outcome === "failed" && /RTB_WEBHOOK_TIMEOUT_MS/.test(h.error)),
    );

    r.answer = () => 200;
    for (const id of [...slow, ...others]) {
      const [cb] = await settled(id, "delivered");
      // Every attempt of one delivery carried its id.
      expect(new Set(r.received.filter((c) => c.body.data.id === id).map((c) => c.id))).toEqual(new Set([cb.webhookId]));
    }
  });

  it(`gives up after RTB_WEBHOOK_MAX_ATTEMPTS (${MAX_ATTEMPTS}) attempts: shown in the timeline and the metrics`, async () => {
    const r = await receiver();
    r.answer = () => 500;
    const before = counter(await metricsText(), "given_up");
    const id = await enqueue({ callbackUrl: `${r.url}/broken` });
    await report([{ unitId: id, attempt: 1, status: "error", error: { message: "no", retryable: false } }]);
    const [cb] = await settled(id, "given_up");
    expect(cb.attempts).toBe(MAX_ATTEMPTS);
    expect(cb.history.map((h: any) => h.outcome)).toEqual([...Array(MAX_ATTEMPTS - 1).fill("failed"), "given_up"]);
    expect(cb.history.every((h: any) => h.statusCode === 500)).toBe(true);
    expect(cb.finishedAt).not.toBeNull();
    expect(r.received).toHaveLength(MAX_ATTEMPTS);
    const text = await metricsText();
    expect(counter(text, "given_up")).toBe(before + 1);
    expect(counter(text, "failed")).toBeGreaterThanOrEqual(MAX_ATTEMPTS - 1);
    expect(text).toMatch(/^rtb_callbacks_pending(\{[^}]*\})? \d+/m);
    expect(text).toMatch(/^rtb_callback_delivery_seconds_count(\{[^}]*\})? [1-9]/m);
  });

  it("a redirect is an answer, not followed", async () => {
    const target = await receiver();
    const r = await receiver();
    r.answer = () => 302;
    const id = await enqueue({ callbackUrl: `${r.url}/moved` });
    await report([{ unitId: id, attempt: 1, status: "success" }]);
    await waitFor("a failed attempt", async () => (await callbacksOf(id))[0]?.history.length >= 1);
    const [cb] = await callbacksOf(id);
    expect(cb.history[0]).toMatchObject({ outcome: "failed", statusCode: 302, error: expect.stringContaining("redirects are not followed") });
    expect(target.received).toEqual([]);
    r.answer = () => 200;
    await settled(id, "delivered");
  });

  it(`takes a callbackUrl of ${MAX_CALLBACK_URL_LENGTH} characters, end to end, and refuses one more`, async () => {
    const r = await receiver();
    const base = `${r.url}/long?pad=`;
    const atMax = base + "x".repeat(MAX_CALLBACK_URL_LENGTH - base.length);
    expect(atMax).toHaveLength(MAX_CALLBACK_URL_LENGTH);
    const id = await enqueue({ callbackUrl: atMax });
    await report([{ unitId: id, attempt: 1, status: "success" }]);
    await settled(id, "delivered");
    expect(r.received.map((c) => `${r.url}${c.path}`)).toEqual([atMax]);

    const res = await call(api, "/units", "POST", { kind: "hook", callbackUrl: `${atMax}x` });
    expect(res).toMatchObject({ status: 400, body: { error: "invalid_request", field: "callbackUrl", message: expect.stringContaining(`at most ${MAX_CALLBACK_URL_LENGTH}`) } });
  });

  it.each([
    ["a host not allowed", "http://example.com/hook", "not in RTB_WEBHOOK_ALLOWED_HOSTS"],
    ["localhost, not listed (127.0.0.1 is)", "http://localhost:9/hook", "not in RTB_WEBHOOK_ALLOWED_HOSTS"],
    ["a scheme other than http(s)", "ftp://127.0.0.1/hook", "http or https"],
    ["file:", "file:///etc/passwd", "http or https"],
    ["user:password", "http://user:pw@127.0.0.1/hook", "user:password"],
    ["a user alone", "http://user@127.0.0.1/hook", "user:password"],
    ["not a URL", "/relative/hook", "absolute"],
  ])("refuses %s with a 400 naming callbackUrl (unit, batch, group), writing nothing", async (_what, url, words) => {
    const before = (await call(api, "/")).body.total;
    expect(await call(api, "/units", "POST", { kind: "hook", callbackUrl: url })).toMatchObject({
      status: 400,
      body: { error: "invalid_request", field: "callbackUrl", message: expect.stringContaining(words) },
    });
    expect(await call(api, "/units", "POST", [{ kind: "hook" }, { kind: "hook", callbackUrl: url }])).toMatchObject({ status: 400, body: { field: "[1].callbackUrl" } });
    expect(await call(api, "/groups/refused", "PUT", { callbackUrl: url })).toMatchObject({ status: 400, body: { field: "callbackUrl" } });
    expect((await call(api, "/")).body.total).toBe(before);
  });

  it("documents the callback request in /openapi.json (webhooks) and the new fields", async () => {
    const doc = (await call(api, "/openapi.json")).body;
    const hook = doc.webhooks?.unitFinished?.post;
    expect(hook.requestBody.content["application/json"].schema).toBeDefined();
    expect(hook.parameters.map((p: any) => p.name).sort()).toEqual(["webhook-id", "webhook-signature", "webhook-timestamp"]);
    expect(JSON.stringify(doc.paths["/units"].post.requestBody)).toContain("callbackUrl");
    expect(JSON.stringify(doc.paths["/groups/{name}"].put.requestBody)).toContain("callbackUrl");
  });
});
