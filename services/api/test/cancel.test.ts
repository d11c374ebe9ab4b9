import type { Channel, ChannelModel } from "amqplib";
import { beforeAll, describe, expect, it } from "vitest";
import type { ApiService } from "@rtb/api";
import { checkTallies, checkTimelines, countByStatus, type DbHandle } from "@rtb/db";
import { CancelMessage, parseMessage } from "@rtb/protocol";
import { openTestDb, rawBroker, useTestPlace, waitFor } from "@rtb/testing";
import { call, getUnit, publishRaw, startApi, statusMessage } from "./support.ts";

// The api alone (no leader, no agents): this file is the operator (POST .../cancel), the
// leader and the agents (raw status messages to the inbox), and an agent's ear on the control
// exchange (a queue of its own bound to it, as every agent binds one).
const place = useTestPlace({ kinds: ["render"] });
let api: ApiService;
let db: DbHandle;
let conn: ChannelModel;
let control: { ch: Channel; queue: string };

beforeAll(async () => {
  api = place.own(await startApi(place, { RTB_SEED_UNITS: "0", RTB_BROADCAST_MAX_QUEUE: "1000", RTB_RETRY_BACKOFF_MS: "600000", RTB_RETRY_BACKOFF_MAX_MS: "600000" }));
  db = place.own(openTestDb(place));
  conn = place.own(await rawBroker());
  const ch = await conn.createChannel();
  const { queue } = await ch.assertQueue("", { exclusive: true, autoDelete: true, durable: false, arguments: { "x-queue-type": "classic" } });
  await ch.bindQueue(queue, place.topology.controlExchange, "");
  control = { ch, queue };
});

const post = (path: string, body?: unknown) => call(api, path, "POST", body);
const send = (...bodies: object[]) => publishRaw(conn, place.topology.inbox, ...bodies);
const ignored = async (reason: string): Promise<number> => (await call(api, "/")).body.reports.ignored[reason] ?? 0;

/** Every cancel announced on the control exchange since the last call. */
async function announced(): Promise<{ unitId: number; attempt: number }[]> {
  const out: { unitId: number; attempt: number }[] = [];
  for (let m = await control.ch.get(control.queue, { noAck: true }); m; m = await control.ch.get(control.queue, { noAck: true })) {
    const parsed = parseMessage(CancelMessage, m.content);
    if (!parsed.ok) throw new Error(`not a cancel message: ${parsed.reason}`);
    out.push(...parsed.value.units);
  }
  return out;
}

/** `n` units of a group of their own, dispatched (attempt 1) by a real top-up. */
async function dispatched(n: number, group: string): Promise<number[]> {
  const ids: number[] = (await post("/units", Array.from({ length: n }, () => ({ kind: "render", group, priority: 1_000_000 })))).body.units.map((u: any) => u.id);
  await call(api, "/go");
  await waitFor("the units to be dispatched", async () => (await Promise.all(ids.map((id) => getUnit(api, id)))).every((u) => u.status === "dispatched"));
  await call(api, "/pause", "POST");
  return ids;
}

describe("POST /units/:id/cancel of a unit in flight", () => {
  it("cancels a processing unit, records who asked, and tells the agents; its late reports change nothing and are counted", async () => {
    await announced();
    const [id] = await dispatched(1, "one");
    await send(statusMessage([{ unitId: id!, attempt: 1, status: "processing" }]));
    await waitFor("processing", async () => (await getUnit(api, id!)).status === "processing");

    const res = await api.app.request(`/units/${id}/cancel`, { method: "POST", headers: { "user-agent": "ops-console/1", "x-forwarded-for": "10.0.0.7" } });
    expect(res.status).toBe(200);
    expect(((await res.json()) as any).unit).toMatchObject({ id, status: "cancelled", attempt: 1 });
    const unit = await getUnit(api, id!);
    expect(unit.events.at(-1)).toMatchObject({
      status: "cancelled",
      attempt: 1,
      source: "operator",
      detail: { action: "cancel", from: "processing", by: { userAgent: "ops-console/1", forwardedFor: "10.0.0.7", tokenPresented: false } },
    });
    expect(await waitFor("the cancel announced", async () => ((await announced()).length > 0 ? true : null))).toBe(true);

    // The agent did not hear it (say): its success comes anyway, and a redelivered job's processing.
    const before = await ignored("cancelled");
    await send(
      statusMessage([{ unitId: id!, attempt: 1, status: "success", result: { late: true } }]),
      statusMessage([{ unitId: id!, attempt: 1, status: "processing" }], { service: "agent", id: "latecomer" }),
    );
    await waitFor("both late reports counted as ignored (cancelled)", async () => (await ignored("cancelled")) === before + 2);
    expect(await getUnit(api, id!)).toMatchObject({ status: "cancelled", result: null });
    // The processing report shows an agent running it: the cancel is announced again.
    expect(await waitFor("the cancel announced again", async () => {
      const units = await announced();
      return units.length > 0 ? units : null;
    })).toEqual([{ unitId: id, attempt: 1 }]);
    const metrics = await (await api.app.request("/metrics")).text();
    expect(metrics).toMatch(/rtb_status_reports_ignored_total\{reason="cancelled",service="api"\} [1-9]/);
    expect(metrics).toMatch(/rtb_broker_messages_published_total\{publisher="control",service="api"\} [1-9]/);
  });

  it("cancels dispatched and queued units too; a finished unit is a 409 naming what can be cancelled", async () => {
    await announced();
    const [a, b] = await dispatched(2, "two");
    await send(statusMessage([{ unitId: b!, attempt: 1, status: "queued" }], { service: "leader", id: "L" }));
    await waitFor("queued", async () => (await getUnit(api, b!)).status === "queued");
    for (const id of [a, b]) expect((await post(`/units/${id}/cancel`)).body.unit.status).toBe("cancelled");
    expect((await waitFor("both announced", async () => {
      const got = await announced();
      return got.length >= 2 ? got : null;
    })).map((u) => u.unitId).sort()).toEqual([a, b].sort());
    const again = await post(`/units/${a}/cancel`);
    expect(again.status).toBe(409);
    expect(again.body).toMatchObject({ error: "conflict", field: "status", unit: { status: "cancelled" } });
    expect(again.body.message).toMatch(/only blocked, pending, dispatched, queued, processing units can be cancelled/);
  });

  it("a cancelled unit may be retried: a new attempt, and the old attempt's reports are still ignored", async () => {
    const [id] = await dispatched(1, "retried");
    await post(`/units/${id}/cancel`);
    expect((await post(`/units/${id}/retry`)).body.unit).toMatchObject({ status: "pending", attempt: 1 });
    await call(api, "/go");
    await waitFor("dispatched again", async () => (await getUnit(api, id!)).attempt === 2);
    await call(api, "/pause", "POST");
    const before = await ignored("stale_attempt");
    await send(statusMessage([{ unitId: id!, attempt: 1, status: "success" }]), statusMessage([{ unitId: id!, attempt: 2, status: "success", result: 2 }]));
    await waitFor("attempt 2 succeeded", async () => (await getUnit(api, id!)).status === "success");
    expect(await ignored("stale_attempt")).toBe(before + 1);
    expect((await getUnit(api, id!)).result).toBe(2);
  });
});

describe("POST /units/cancel (bulk, by filter)", () => {
  it("cancels every unit of a group, in flight or not, and leaves the other groups untouched", async () => {
    await announced();
    const running = await dispatched(3, "acme");
    const waiting: number[] = (await post("/units", Array.from({ length: 4 }, () => ({ kind: "render", group: "acme" })))).body.units.map((u: any) => u.id);
    const others: number[] = (await post("/units", Array.from({ length: 3 }, () => ({ kind: "render", group: "globex" })))).body.units.map((u: any) => u.id);
    const res = await post("/units/cancel", { group: "acme" });
    expect(res).toEqual({ status: 200, body: { cancelled: 7, inFlight: 3 } });
    for (const id of [...running, ...waiting]) expect((await getUnit(api, id)).status).toBe("cancelled");
    for (const id of others) expect((await getUnit(api, id)).status).toBe("pending");
    const got = await waitFor("the in-flight ones announced", async () => {
      const units = await announced();
      return units.length > 0 ? units : null;
    });
    expect(got.map((u) => u.unitId).sort()).toEqual([...running].sort());
    expect(await post("/units/cancel", { group: "acme" })).toEqual({ status: 200, body: { cancelled: 0, inFlight: 0 } });
    // By status too: only globex's pending units of kind render.
    expect((await post("/units/cancel", { kind: "render", group: "globex", status: ["pending"] })).body).toEqual({ cancelled: 3, inFlight: 0 });
  });

  it.each([
    [{}, "body", /expected kind, group and\/or status/],
    [{ status: "success" }, "status", /pending, dispatched, queued, processing/],
    [{ status: ["pending", "done"] }, "status", /pending, dispatched, queued, processing/],
    [{ status: [] }, "status", /./],
    [{ group: "" }, "group", /at least 1/],
    [{ kind: "no spaces" }, "kind", /./],
    [{ colour: "red" }, "colour", /unknown field/],
  ])("a bad body %j is a 400 naming %s, and cancels nothing", async (body, field, message) => {
    await post("/units", { kind: "render", group: "untouched" });
    const before = await countByStatus(db.db);
    const res = await post("/units/cancel", body);
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(res.body).toMatchObject({ error: "invalid_request", field });
    expect(res.body.message).toMatch(message);
    expect(await countByStatus(db.db)).toEqual(before);
  });

  it("no body at all, or not JSON, is refused before anything is read", async () => {
    expect((await api.app.request("/units/cancel", { method: "POST" })).status).toBe(400);
    expect((await api.app.request("/units/cancel", { method: "POST", body: "group=acme", headers: { "content-type": "application/x-www-form-urlencoded" } })).status).toBe(415);
  });

  it("every cancel kept the timelines and the tallies exact", async () => {
    expect(await checkTimelines(db.db)).toEqual([]);
    expect(await checkTallies(db.db)).toEqual([]);
  });
});
