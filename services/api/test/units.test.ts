import type { ChannelModel } from "amqplib";
import { Kysely, PostgresDialect } from "kysely";
import { beforeAll, describe, expect, it } from "vitest";
import type { ApiService } from "@rtb/api";
import { checkTimelines, countByStatus, enqueueUnits, type Database, type DbHandle } from "@rtb/db";
import { BACKLOG, IN_FLIGHT, KIND_PATTERN, KIND_RULE, NAME_MAX_LENGTH, OUTCOMES, OUTSTANDING, TERMINAL, UNIT_STATUSES } from "@rtb/protocol";
import { createConfig, lintFromString } from "@redocly/openapi-core";
import { openTestDb, rawBroker, useTestPlace, waitFor } from "@rtb/testing";
import { call, eventStatuses, getUnit, publishRaw, startApi, statusMessage } from "./support.ts";

// The api alone, with small request limits, no seed and no leader: this file plays the
// producer (POST /units), the operator (retry, cancel, redrive) and, where a unit must fail,
// the agents (raw status messages to the inbox).
const MAX_BATCH = 50;
const MAX_BODY = 32 * 1024;

const place = useTestPlace({ kinds: ["simulate", "render", "email"] });
let api: ApiService;
let db: DbHandle;
let conn: ChannelModel;

beforeAll(async () => {
  api = place.own(await startApi(place, {
    RTB_SEED_UNITS: "0",
    RTB_API_MAX_BATCH: String(MAX_BATCH),
    RTB_API_MAX_BODY_BYTES: String(MAX_BODY),
    RTB_MAX_ATTEMPTS: "2",
    RTB_BROADCAST_MAX_QUEUE: "1000",
  }));
  db = place.own(openTestDb(place));
  conn = place.own(await rawBroker());
});

const post = (path: string, body?: unknown) => call(api, path, "POST", body);
const total = async () => Object.values(await countByStatus(db.db)).reduce((a, b) => a + b, 0);

/** Every rejected request below must leave the table exactly as it was. */
async function expectRejected(path: string, body: unknown, status: number, field: string, message?: RegExp) {
  const before = await total();
  const res = await post(path, body);
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.body).toMatchObject({ field });
  expect(typeof res.body.error).toBe("string");
  if (message) expect(res.body.message).toMatch(message);
  expect(await total()).toBe(before);
  return res.body;
}

describe("POST /units", () => {
  it("enqueues one unit with defaults and returns it (201); GET /units/:id shows it pending with an empty timeline", async () => {
    const res = await post("/units", { kind: "render", payload: { scene: 7 } });
    expect(res.status).toBe(201);
    expect(res.body.created).toBe(true);
    expect(res.body.unit).toMatchObject({ kind: "render", group: "default", priority: 0, payload: { scene: 7 }, ref: null, status: "pending", attempt: 0, maxAttempts: 2 });
    const unit = await getUnit(api, res.body.unit.id);
    expect(unit.status).toBe("pending");
    expect(unit.events).toEqual([]);
  });

  it("the same ref again returns the existing unit (200, created: false), never a second one", async () => {
    const first = await post("/units", { kind: "email", ref: "order-1001", group: "acme", priority: 5 });
    expect(first.status).toBe(201);
    const before = await total();
    const again = await post("/units", { kind: "email", ref: "order-1001", group: "other", priority: 9 });
    expect(again.status).toBe(200);
    expect(again.body.created).toBe(false);
    expect(again.body.unit).toMatchObject({ id: first.body.unit.id, group: "acme", priority: 5 });
    expect(await total()).toBe(before);
  });

  it("a batch is inserted in order in one statement; known and repeated refs map to their unit", async () => {
    await post("/units", { kind: "email", ref: "known" });
    const before = await total();
    const res = await post("/units", [
      { kind: "render", group: "g1", ref: "b-1" },
      { kind: "render", group: "g1" },
      { kind: "email", ref: "known" },
      { kind: "render", group: "g1", ref: "b-1" },
      { kind: "render", group: "g2", priority: 3, maxAttempts: 7 },
    ]);
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ created: 3, existing: 2 });
    const u = res.body.units;
    expect(u.map((x: any) => x.created)).toEqual([true, true, false, false, true]);
    expect(u[3].id).toBe(u[0].id);
    expect(u[0].id < u[1].id && u[1].id < u[4].id).toBe(true); // FIFO follows the request's order
    expect(await total()).toBe(before + 3);
    expect((await getUnit(api, u[4].id)).maxAttempts).toBe(7);
  });

  it("a batch is one round trip to PostgreSQL, whatever its size", async () => {
    let statements = 0;
    const counting = new Kysely<Database>({
      dialect: new PostgresDialect({ pool: db.pool }),
      log: (e) => void (e.level === "query" && statements++),
    });
    const units = Array.from({ length: 500 }, (_, i) => ({ kind: "render", group: `g${i % 7}`, priority: 0, payload: { i }, ref: i % 2 ? `rt-${i}` : null, maxAttempts: 1 }));
    const results = await enqueueUnits(counting, units);
    expect(statements).toBe(1);
    expect(results.filter((r) => r.created)).toHaveLength(500);
  });

  it("a ref already in the table, raced by a concurrent batch, still yields one unit", async () => {
    const bodies = Array.from({ length: 6 }, () => [{ kind: "render", ref: "race-1" }, { kind: "render", ref: "race-2" }]);
    const results = await Promise.all(bodies.map((b) => post("/units", b)));
    const ids = new Set(results.flatMap((r) => r.body.units.map((u: any) => u.id)));
    expect(ids.size).toBe(2);
    expect(results.flatMap((r) => r.body.units).filter((u: any) => u.created)).toHaveLength(2);
  });

  describe("bad input: 4xx JSON naming the field, nothing written", () => {
    it("malformed JSON", async () => {
      await expectRejected("/units", '{"kind": "render",', 400, "body", /malformed JSON/);
    });
    it("no body", async () => {
      await expectRejected("/units", "", 400, "body", /expected a JSON body/);
    });
    it("a missing kind", async () => {
      await expectRejected("/units", { group: "g" }, 400, "kind");
    });
    it("a kind that could never be routed", async () => {
      await expectRejected("/units", { kind: "has space" }, 400, "kind", /letters, digits/);
    });
    it("wrong types", async () => {
      await expectRejected("/units", { kind: "render", priority: "high" }, 400, "priority");
      await expectRejected("/units", { kind: "render", priority: 1.5 }, 400, "priority");
      await expectRejected("/units", { kind: "render", maxAttempts: 0 }, 400, "maxAttempts");
      await expectRejected("/units", { kind: "render", ref: "" }, 400, "ref");
    });
    it("an unknown field", async () => {
      await expectRejected("/units", { kind: "render", colour: "red" }, 400, "colour", /unknown field/);
    });
    it("one bad unit in a batch: the batch is refused, naming the unit's index and field", async () => {
      await expectRejected("/units", [{ kind: "render" }, { kind: "render" }, { kind: "render", group: "" }], 400, "[2].group");
    });
    it("an empty batch, and a batch above RTB_API_MAX_BATCH", async () => {
      await expectRejected("/units", [], 400, "body", /at least one/);
      const big = Array.from({ length: MAX_BATCH + 1 }, () => ({ kind: "render" }));
      await expectRejected("/units", big, 400, "body", /RTB_API_MAX_BATCH/);
    });
    it("a body above RTB_API_MAX_BODY_BYTES: 413", async () => {
      await expectRejected("/units", { kind: "render", payload: "x".repeat(MAX_BODY) }, 413, "body", /RTB_API_MAX_BODY_BYTES/);
    });
    it("a value PostgreSQL refuses (a NUL inside a JSON string), naming its path", async () => {
      await expectRejected("/units", '{"kind":"render","payload":{"s":"a\\u0000b"}}', 400, "payload.s", /NUL/);
    });
  });
});

describe("GET /units", () => {
  let mine: number[];
  beforeAll(async () => {
    const res = await post("/units", Array.from({ length: 12 }, (_, i) => ({ kind: i % 3 ? "render" : "email", group: "listing" })));
    mine = res.body.units.map((u: any) => u.id);
  });

  it("pages through a filter newest first with keyset cursors, each unit exactly once", async () => {
    const seen: number[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const res: { status: number; body: any } = await call(api, `/units?group=listing&limit=5${cursor ? `&after=${cursor}` : ""}`);
      expect(res.status).toBe(200);
      seen.push(...res.body.units.map((u: any) => u.id));
      cursor = res.body.nextCursor;
      pages++;
    } while (cursor);
    expect(pages).toBe(3);
    expect(seen).toEqual([...mine].sort((a, b) => b - a));
  });

  it("filters by kind and by several statuses", async () => {
    const email = await call(api, "/units?group=listing&kind=email&limit=100");
    expect(email.body.units.map((u: any) => u.id)).toEqual(mine.filter((_, i) => i % 3 === 0).reverse());
    expect((await call(api, "/units?group=listing&status=success,cancelled")).body.units).toEqual([]);
    expect((await call(api, "/units?group=listing&status=pending,error&limit=1000")).body.units).toHaveLength(12);
  });

  it("ref finds the one unit enqueued with it; an unknown ref is an empty page", async () => {
    const { id } = (await post("/units", { kind: "render", group: "by-ref", ref: "find-me-ref" })).body.unit;
    await post("/units", { kind: "render", group: "by-ref", ref: "find-me-ref-2" });
    const found = await call(api, `/units?ref=${encodeURIComponent("find-me-ref")}`);
    expect(found.status).toBe(200);
    expect(found.body).toEqual({ units: [expect.objectContaining({ id, ref: "find-me-ref", group: "by-ref" })], nextCursor: null, backlog: expect.any(Object) });
    // With the other filters: they still apply.
    expect((await call(api, "/units?ref=find-me-ref&kind=email")).body.units).toEqual([]);
    expect(await call(api, "/units?ref=no-such-ref")).toMatchObject({ status: 200, body: { units: [], nextCursor: null } });
    // Exactly, not as a prefix or a pattern.
    expect((await call(api, "/units?ref=find-me")).body.units).toEqual([]);
    expect((await call(api, "/units?ref=find-me-ref%25")).body.units).toEqual([]);
  });

  it("stuck=true lists in-flight units past their timeout only", async () => {
    const [old, fresh] = (await post("/units", [{ kind: "render", group: "stuck" }, { kind: "render", group: "stuck" }])).body.units.map((u: any) => u.id);
    // Both dispatched (as a top-up would, timeline included), one of them an hour ago.
    for (const [id, at] of [[old, new Date(Date.now() - 3_600_000)], [fresh, new Date()]] as const) {
      await db.db.updateTable("units").set({ status: "dispatched", attempt: 1, dispatched_at: at }).where("id", "=", id).execute();
      await db.db.insertInto("unit_events").values({ unit_id: id, attempt: 1, status: "dispatched", at, source: "api", detail: null }).execute();
    }
    const res = await call(api, "/units?group=stuck&stuck=true");
    expect(res.body.units.map((u: any) => u.id)).toEqual([old]);
  });

  it.each([
    ["status=done", "status", /unknown status 'done'/],
    ["limit=-1", "limit", /between 1 and 1000/],
    ["limit=0", "limit", /between/],
    ["limit=abc", "limit", /integer/],
    ["after=-5", "after", /integer/],
    ["stuck=yes", "stuck", /true or false/],
    ["kind=a%20b", "kind", /letters/],
    [`ref=${"r".repeat(NAME_MAX_LENGTH + 1)}`, "ref", /200/],
    ["ref=", "ref", /./],
    ["ref=a%00", "ref", /NUL/],
    ["colour=red", "colour", /unknown field/],
  ])("GET /units?%s is a 400 naming %s", async (query, field, message) => {
    const res = await call(api, `/units?${query}`);
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ error: "invalid_request", field });
    expect(res.body.message).toMatch(message);
  });
});

describe("cancel, retry, redrive", () => {
  const send = (...bodies: object[]) => publishRaw(conn, place.topology.inbox, ...bodies);

  const all = async (ids: number[], status: string) => (await Promise.all(ids.map((id) => getUnit(api, id)))).every((u) => u.status === status);

  /**
   * Enqueue `n` units of a kind of their own and fail them for good through the inbox, `times`
   * times over (retried in between), as agents would: dispatched by a real top-up each time.
   */
  async function errored(n: number, kind: string, times = 1): Promise<number[]> {
    const ids: number[] = (await post("/units", Array.from({ length: n }, () => ({ kind, group: "failing", priority: 1_000_000 })))).body.units.map((u: any) => u.id);
    for (let attempt = 1; attempt <= times; attempt++) {
      if (attempt > 1) for (const id of ids) expect((await post(`/units/${id}/retry`)).status).toBe(200);
      await call(api, "/go");
      await waitFor("the units to be dispatched", () => all(ids, "dispatched"));
      await call(api, "/pause", "POST");
      await send(statusMessage(ids.map((unitId) => ({ unitId, attempt, status: "error", error: { message: "boom", retryable: false } }))));
      await waitFor("the units to fail", () => all(ids, "error"));
    }
    return ids;
  }

  it("cancel: a pending unit is cancelled, recorded in its timeline, and never dispatched", async () => {
    const id = (await post("/units", { kind: "render", group: "cancel", priority: 999_999 })).body.unit.id;
    const res = await post(`/units/${id}/cancel`);
    expect(res.status).toBe(200);
    expect(res.body.unit).toMatchObject({ id, status: "cancelled" });
    const unit = await getUnit(api, id);
    expect(unit.events).toMatchObject([{ status: "cancelled", source: "operator", attempt: 0, detail: { action: "cancel", from: "pending" } }]);
    expect((await call(api, "/next?limit=1000")).body.units.map((u: any) => u.id)).not.toContain(id);
    const again = await post(`/units/${id}/cancel`);
    expect(again.status).toBe(409);
    expect(again.body).toMatchObject({ error: "conflict", field: "status", unit: { status: "cancelled" } });
  });

  it("retry: an errored unit goes back to the backlog with one more attempt; a pending one is a 409", async () => {
    const [id] = await errored(1, "retry-one");
    const res = await post(`/units/${id}/retry`);
    expect(res.status).toBe(200);
    expect(res.body.unit).toMatchObject({ id, status: "pending", attempt: 1, maxAttempts: 2, notBefore: null });
    expect(eventStatuses(await getUnit(api, id!))).toEqual(["dispatched", "error", "pending"]);
    expect((await post(`/units/${id}/retry`)).status).toBe(409);
  });

  it("retry after the last attempt failed: one more attempt", async () => {
    const [id] = await errored(1, "retry-last", 2);
    expect((await getUnit(api, id!)).maxAttempts).toBe(2);
    expect((await post(`/units/${id}/retry`)).body.unit).toMatchObject({ status: "pending", attempt: 2, maxAttempts: 3 });
  });

  it("retry: a cancelled unit goes back to the backlog", async () => {
    const id = (await post("/units", { kind: "render", group: "cancel" })).body.unit.id;
    await post(`/units/${id}/cancel`);
    expect((await post(`/units/${id}/retry`)).body.unit.status).toBe("pending");
  });

  it("redrive: every errored unit of a kind back to the backlog in one call; the others stay", async () => {
    const failed = await errored(3, "redrive-a");
    const other = await errored(1, "redrive-b");
    const res = await post("/units/redrive", { kind: "redrive-a" });
    expect(res).toEqual({ status: 200, body: { retried: 3 } });
    for (const id of failed) expect((await getUnit(api, id)).status).toBe("pending");
    expect((await getUnit(api, other[0]!)).status).toBe("error");
    expect((await post("/units/redrive")).body.retried).toBe(1);
    await expectRejected("/units/redrive", { kinds: "x" }, 400, "kinds", /unknown field/);
  });

  it("operator actions keep every timeline rule (the checker finds no violation)", async () => {
    expect(await checkTimelines(db.db)).toEqual([]);
  });

  it.each(["retry", "cancel"])("POST /units/:id/%s: an unknown id is a 404 naming id; a bad id a 400", async (verb) => {
    const missing = await post(`/units/987654321/${verb}`);
    expect(missing.status).toBe(404);
    expect(missing.body).toMatchObject({ error: "not_found", field: "id" });
    expect((await post(`/units/abc/${verb}`)).body).toMatchObject({ error: "invalid_request", field: "id" });
  });

  it("GET /units/:id of an unknown id is a 404 naming id", async () => {
    expect(await call(api, "/units/987654321")).toMatchObject({ status: 404, body: { field: "id" } });
  });
});

describe("GET /openapi.json", () => {
  it("documents every route the api serves, and only those", async () => {
    const { status, body } = await call(api, "/openapi.json");
    expect(status).toBe(200);
    expect(body.openapi).toBe("3.1.0");
    const documented = new Set(Object.entries(body.paths as Record<string, object>).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`)));
    const served = new Set(
      api.app.routes
        .filter((r) => r.method !== "ALL")
        .map((r) => `${r.method} ${r.path.replace(/:([A-Za-z_]+)/g, "{$1}").replace(/(.)\/$/, "$1")}`)
        .filter((r) => !r.endsWith("/*")),
    );
    // Not part of the API: the dashboard's static files, and the 405 that tells a GET /pause to POST.
    const notApi = (r: string) => r.startsWith("GET /dashboard/") || r === "GET /pause" || r === "HEAD /pause";
    for (const r of served) if (notApi(r)) served.delete(r);
    expect([...served].filter((r) => !documented.has(r))).toEqual([]);
    expect([...documented].filter((r) => !served.has(r))).toEqual([]);
  });

  it("is generated from the validating schemas: the limits and rules the api enforces are the ones it states", async () => {
    const { body } = await call(api, "/openapi.json");
    const enqueue = body.paths["/units"].post.requestBody.content["application/json"].schema;
    const [one, many] = enqueue.anyOf;
    expect(many).toMatchObject({ type: "array", maxItems: MAX_BATCH, minItems: 1 });
    expect(one.required).toEqual(["kind"]);
    expect(one.additionalProperties).toBe(false);
    expect(new RegExp(one.properties.kind.pattern).test("has space")).toBe(false);
    const list = body.paths["/units"].get.parameters.map((p: any) => p.name);
    expect(list).toEqual(["status", "kind", "group", "ref", "schedule", "waiting", "stuck", "limit", "after"]);
    const ref = body.paths["/units"].get.parameters.find((p: any) => p.name === "ref");
    expect(ref.schema).toMatchObject({ type: "string", minLength: 1, maxLength: NAME_MAX_LENGTH });
    const limit = body.paths["/units"].get.parameters.find((p: any) => p.name === "limit");
    expect(limit.schema).toMatchObject({ type: "integer", minimum: 1, maximum: 1000, default: 50 });
    expect(body.paths["/units/{id}/retry"].post.responses).toHaveProperty("409");
  });
});

describe("GET /openapi.json, linted", () => {
  it("passes Redocly's recommended rules with no errors; the only warning is the license the project does not declare", async () => {
    const { body } = await call(api, "/openapi.json");
    const config = await createConfig({ extends: ["recommended"] });
    const problems = await lintFromString({ source: JSON.stringify(body), absoluteRef: "openapi.json", config });
    const shown = problems.map((p) => `${p.severity} ${p.ruleId}: ${p.message} at ${p.location[0]?.pointer}`);
    expect(shown.filter((p) => p.startsWith("error"))).toEqual([]);
    expect(problems.filter((p) => p.severity === "warn").map((p) => p.ruleId)).toEqual(["info-license"]);
    expect(body.servers).toEqual([expect.objectContaining({ url: "/" })]);
  });

  it("names the shared schemas in components.schemas and refers to them, instead of writing the unit out at every use", async () => {
    const { body } = await call(api, "/openapi.json");
    expect(Object.keys(body.components.schemas)).toEqual(expect.arrayContaining(["Unit", "UnitWithTimeline", "UnitEvent", "UnitStatus", "Error", "Group", "State"]));
    const text = JSON.stringify(body.paths);
    expect(text).toContain('"$ref":"#/components/schemas/Unit"');
    // The unit's properties are written out once: in its component.
    expect(JSON.stringify(body).split('"republishes":').length - 1).toBe(1);
    expect(body.components.schemas.UnitEvent.properties.status).toEqual({ $ref: "#/components/schemas/UnitStatus" });
    expect(body.components.schemas.UnitStatus.enum).toEqual([...UNIT_STATUSES]);
    // Counts are never negative; the cursor goes back as the text it came as.
    expect(body.components.schemas.Unit.properties.attempt).toMatchObject({ type: "integer", minimum: 0 });
    const cursor = body.paths["/units"].get.responses["200"].content["application/json"].schema.properties.nextCursor;
    const after = body.paths["/units"].get.parameters.find((p: any) => p.name === "after").schema;
    expect(after.type).toBe("string");
    expect(JSON.stringify(cursor)).toContain(after.pattern);
  });

  it("describes every property of every schema", async () => {
    const { body } = await call(api, "/openapi.json");
    const undescribed: string[] = [];
    const described = (s: any): boolean => Boolean(s?.description) || (typeof s?.$ref === "string" && Boolean(resolve(s.$ref)?.description)) || (Array.isArray(s?.allOf) && s.allOf.some(described));
    const resolve = (ref: string) => body.components.schemas[ref.replace("#/components/schemas/", "")];
    const walk = (s: any, at: string) => {
      if (!s || typeof s !== "object") return;
      for (const [k, v] of Object.entries((s.properties ?? {}) as Record<string, any>)) {
        if (!described(v)) undescribed.push(`${at}.${k}`);
        walk(v, `${at}.${k}`);
      }
      for (const key of ["items", "additionalProperties"]) walk(s[key], `${at}[]`);
      for (const key of ["anyOf", "oneOf", "allOf"]) (s[key] ?? []).forEach((x: any, i: number) => walk(x, `${at}|${i}`));
    };
    for (const [name, s] of Object.entries(body.components.schemas)) walk(s, name);
    for (const [path, ops] of Object.entries(body.paths as Record<string, Record<string, any>>)) {
      for (const [method, op] of Object.entries(ops)) {
        for (const [code, r] of Object.entries((op.responses ?? {}) as Record<string, any>)) {
          for (const media of Object.values((r.content ?? {}) as Record<string, any>)) walk(media.schema, `${method} ${path} ${code}`);
        }
      }
    }
    expect(undescribed).toEqual([]);
  });

  it("says reads need the token when RTB_API_TOKEN_READS is on, and documents the 401", async () => {
    const token = "0123456789abcdef0123456789abcdef";
    const guarded = place.own(await startApi(place, { RTB_SEED_UNITS: "0", RTB_API_TOKEN: token, RTB_API_TOKEN_READS: "true" }));
    const res = await guarded.app.request("/openapi.json", { headers: { authorization: `Bearer ${token}` } });
    const doc = (await res.json()) as any;
    expect(doc.paths["/units"].get.security).toEqual([{ bearer: [] }]);
    expect(doc.paths["/units"].get.responses).toHaveProperty("401");
    expect(doc.paths["/healthz"].get.security).toEqual([]);
    const open = (await call(api, "/openapi.json")).body;
    expect(open.paths["/units"].get.security).toEqual([]);
    expect(open.paths["/units"].post.security).toEqual([{ bearer: [] }]);
  });
});

describe("refusals are in the api's words", () => {
  it.each([
    ["a body without kind", "/units", "POST", {}, "kind", /^required: expected a string$/],
    ["kind a number", "/units", "POST", { kind: 5 }, "kind", /^expected a string, got a number$/],
    ["priority a string", "/units", "POST", { kind: "render", priority: "5" }, "priority", /^expected a number, got a string$/],
    ["maxAttempts 0", "/units", "POST", { kind: "render", maxAttempts: 0 }, "maxAttempts", /^expected at least 1$/],
    ["an unknown field in a batch", "/units", "POST", [{ kind: "render", colour: 1 }], "[0].colour", /^unknown field/],
    ["a group's weight as text", "/groups/g", "PUT", { weight: "heavy" }, "weight", /^expected a number, got a string$/],
    ["a group's maxInFlight fractional", "/groups/g", "PUT", { maxInFlight: 1.5 }, "maxInFlight", /integer/],
    ["an unknown query parameter", "/units?colour=red", "GET", undefined, "colour", /^unknown field/],
    ["an empty group filter", "/units?group=", "GET", undefined, "group", /^expected at least 1 characters$/],
  ])("%s: 400 naming the field, never zod's words", async (_what, path, method, body, field, message) => {
    const res = await call(api, path, method, body);
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(res.body).toMatchObject({ error: "invalid_request", field });
    expect(res.body.message).toMatch(message);
    expect(res.body.message).not.toMatch(/Invalid input|Too small|Too big|Unrecognized/);
  });
});

describe("GET /meta", () => {
  it("serves @rtb/protocol's statuses, their sets and name rules, and the request limits this api runs with", async () => {
    const { status, body } = await call(api, "/meta");
    expect(status).toBe(200);
    expect(body.statuses).toEqual([...UNIT_STATUSES]);
    expect(body.sets).toEqual({ backlog: [...BACKLOG], outstanding: [...OUTSTANDING], inFlight: [...IN_FLIGHT], terminal: [...TERMINAL], outcomes: [...OUTCOMES] });
    expect(body.names).toMatchObject({ kindPattern: KIND_PATTERN.source, kindRule: KIND_RULE, nameMaxLength: NAME_MAX_LENGTH });
    expect(body.limits).toMatchObject({ maxBatch: MAX_BATCH, maxBodyBytes: MAX_BODY, maxAttempts: 2 });
    expect(body.limits.maxPayloadBytes).toBeGreaterThan(0);
  });
});
