import { beforeAll, describe, expect, it } from "vitest";
import type { ApiService } from "@rtb/api";
import { openTestDb, useTestPlace } from "@rtb/testing";
import type { DbHandle } from "@rtb/db";
import { UNIT_STATUSES } from "@rtb/protocol";
import { call, getUnit, startApi } from "./support.ts";

// One api, 10 seeded units, RTB_BROADCAST_MAX_QUEUE=4 and no leader: nothing moves after a
// dispatch, so every number below is exact. The tests run in order: before /go, then after.
const MAX_QUEUE = 4;

const place = useTestPlace();
let api: ApiService;
let db: DbHandle;

beforeAll(async () => {
  api = place.own(await startApi(place, { RTB_BROADCAST_MAX_QUEUE: String(MAX_QUEUE) }));
  db = place.own(openTestDb(place));
});

const ids = (units: { id: number }[]) => units.map((u) => u.id);

describe("before dispatching is on", () => {
  it("GET / reports counts for all 8 statuses, the total, outstanding, maxQueue, dispatching off and no leader", async () => {
    const { status, body } = await call(api, "/");
    expect(status).toBe(200);
    expect(Object.keys(body.counts).sort()).toEqual([...UNIT_STATUSES].sort());
    expect(body.counts).toEqual({ blocked: 0, pending: 10, dispatched: 0, queued: 0, processing: 0, success: 0, error: 0, cancelled: 0 });
    expect(body).toMatchObject({ total: 10, outstanding: 0, maxQueue: MAX_QUEUE, dispatching: false, leader: null });
  });

  it("GET /next lists 10 units by default, in dispatch order", async () => {
    const { status, body } = await call(api, "/next");
    expect(status).toBe(200);
    expect(body.limit).toBe(10);
    // Seeded round-robin over 5 groups, one priority: dispatch order is id order here.
    expect(ids(body.units)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(body.units[0]).toMatchObject({ id: 1, kind: "simulate", group: "customer-1", priority: 0, attempt: 0 });
  });

  it("GET /next?limit=3 lists exactly the first 3", async () => {
    const { status, body } = await call(api, "/next?limit=3");
    expect(status).toBe(200);
    expect(ids(body.units)).toEqual([1, 2, 3]);
  });

  it.each(["0", "-1", "abc", "1001", "2.5", "0x10", "1e3", ""])("GET /next?limit=%s is a 400 naming the field limit", async (limit) => {
    const { status, body } = await call(api, `/next?limit=${limit}`);
    expect(status).toBe(400);
    expect(body).toMatchObject({ error: "invalid_request", field: "limit" });
    expect(typeof body.message).toBe("string");
  });

  it("GET /units/:id returns the unit and its (empty) timeline", async () => {
    const unit = await getUnit(api, 3);
    expect(unit).toMatchObject({ id: 3, status: "pending", attempt: 0, maxAttempts: 3, kind: "simulate", payload: { n: 3 } });
    expect(unit.events).toEqual([]);
  });

  it("GET /units/:id of an unknown unit is a JSON 404", async () => {
    const { status, body } = await call(api, "/units/999999");
    expect(status).toBe(404);
    expect(body.error).toBe("not_found");
  });

  it.each(["abc", "0", "-4", "1.5", "0x1", "1e0"])("GET /units/%s is a 400 naming the field id", async (id) => {
    const { status, body } = await call(api, `/units/${id}`);
    expect(status).toBe(400);
    expect(body).toMatchObject({ error: "invalid_request", field: "id" });
  });

  it("HEAD /go does not start dispatching (405)", async () => {
    const res = await api.app.request("/go", { method: "HEAD" });
    expect(res.status).toBe(405);
    expect((await call(api, "/")).body.dispatching).toBe(false);
  });

  it("an unknown route is a JSON 404", async () => {
    const { status, body } = await call(api, "/no/such/route");
    expect(status).toBe(404);
    expect(body).toMatchObject({ error: "not_found" });
  });

  it("/healthz answers 200 and /readyz 200 with the database and the broker up", async () => {
    expect((await call(api, "/healthz")).status).toBe(200);
    const ready = await call(api, "/readyz");
    expect(ready.status).toBe(200);
    expect(ready.body).toEqual({ ready: true, database: true, broker: true, inbox: true });
  });
});

describe("once /go was called", () => {
  it("GET /next?limit=k lists exactly the units the next top-up of k dispatches (priority, then round-robin over groups, then FIFO)", async () => {
    // Units that make the order differ from id order: a higher priority, and two groups of one priority.
    await db.db
      .insertInto("units")
      .values([
        { kind: "simulate", group_name: "bulk", priority: 1, max_attempts: 3, status: "pending" }, // 11
        { kind: "simulate", group_name: "bulk", priority: 1, max_attempts: 3, status: "pending" }, // 12
        { kind: "simulate", group_name: "bulk", priority: 1, max_attempts: 3, status: "pending" }, // 13
        { kind: "simulate", group_name: "solo", priority: 1, max_attempts: 3, status: "pending" }, // 14
        { kind: "simulate", group_name: "bulk", priority: 2, max_attempts: 3, status: "pending" }, // 15
      ])
      .execute();
    const preview = ids((await call(api, `/next?limit=${MAX_QUEUE}`)).body.units);
    // 15 first (priority 2); then at priority 1 solo before bulk, because bulk already has 15
    // in flight (fair share counts what a group has in flight); then bulk, first in first out.
    expect(preview).toEqual([15, 14, 11, 12]);

    const go = await call(api, "/go");
    expect(go.status).toBe(200);
    expect(go.body).toMatchObject({ dispatching: true, changed: true, dispatchedNow: MAX_QUEUE });

    const dispatched = await db.db.selectFrom("units").select("id").where("status", "=", "dispatched").orderBy("id").execute();
    expect(dispatched.map((r) => r.id)).toEqual([...preview].sort((a, b) => a - b));
  });

  it("a second /go says dispatching was already on (changed false)", async () => {
    const { status, body } = await call(api, "/go");
    expect(status).toBe(200);
    expect(body).toMatchObject({ dispatching: true, changed: false });
  });

  it("/go/ with a trailing slash and POST /go work too", async () => {
    for (const [path, method] of [["/go/", "GET"], ["/go", "POST"], ["/go/", "POST"]] as const) {
      const { status, body } = await call(api, path, method);
      expect(status, `${method} ${path}`).toBe(200);
      expect(body, `${method} ${path}`).toMatchObject({ dispatching: true, changed: false });
    }
  });

  it("GET / shows dispatching on and outstanding == min(maxQueue, units), never more", async () => {
    const { body } = await call(api, "/");
    expect(body.dispatching).toBe(true);
    expect(body.total).toBe(15);
    expect(body.outstanding).toBe(Math.min(MAX_QUEUE, body.total));
    expect(body.counts).toMatchObject({ dispatched: MAX_QUEUE, pending: 15 - MAX_QUEUE });
  });

  it("a dispatched unit is on attempt 1 with one `dispatched` event from the api", async () => {
    const unit = await getUnit(api, 15);
    expect(unit).toMatchObject({ status: "dispatched", attempt: 1 });
    expect(unit.events).toEqual([expect.objectContaining({ attempt: 1, status: "dispatched", source: "api" })]);
  });

  it("GET /next no longer lists dispatched units", async () => {
    const { body } = await call(api, "/next?limit=1000");
    const listed = ids(body.units);
    expect(listed).toHaveLength(15 - MAX_QUEUE);
    for (const id of [15, 11, 14, 12]) expect(listed).not.toContain(id);
    expect(listed.slice(0, 2)).toEqual([13, 1]);
  });
});
