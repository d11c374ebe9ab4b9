import { beforeAll, describe, expect, it } from "vitest";
import { createApp, type ApiService } from "@rtb/api";
import { countByStatus, enqueueUnits, type DbHandle } from "@rtb/db";
import { sql } from "kysely";
import { openTestDb, testLogger, useTestPlace } from "@rtb/testing";
import { call, startApi } from "./support.ts";

// Issue 12: what the api accepts is stored and handed over exactly as sent, or refused at
// the door with a 4xx naming the field; a 5xx leaves nothing written; no web page can
// change state. Every refusal below must leave the table as it was.
const place = useTestPlace({ kinds: ["render"] });
let api: ApiService;
let db: DbHandle;

beforeAll(async () => {
  api = place.own(await startApi(place, { RTB_SEED_UNITS: "0" }));
  db = place.own(openTestDb(place));
});

const total = async () => Object.values(await countByStatus(db.db)).reduce((a, b) => a + b, 0);
type Init = { method?: string; body?: string | Uint8Array; headers?: Record<string, string> };
async function raw(path: string, init: Init = {}) {
  const res = await api.app.request(path, { method: init.method ?? "POST", ...(init.body === undefined ? {} : { body: init.body }), headers: init.headers ?? {} });
  return { status: res.status, body: (await res.json()) as any };
}
const JSON_TYPE = { "content-type": "application/json" };

async function refused(res: Promise<{ status: number; body: any }>, status: number, field: string, message?: RegExp) {
  const before = await total();
  const { status: got, body } = await res;
  expect(got, JSON.stringify(body)).toBe(status);
  expect(body.field).toBe(field);
  if (message) expect(body.message).toMatch(message);
  expect(await total()).toBe(before);
}

describe("text is stored as sent, or refused", () => {
  it("a NUL anywhere (kind, group, ref, payload strings and keys) is a 400 naming its path", async () => {
    await refused(raw("/units", { headers: JSON_TYPE, body: '{"kind":"re\\u0000nder"}' }), 400, "kind");
    await refused(raw("/units", { headers: JSON_TYPE, body: '{"kind":"render","group":"a\\u0000"}' }), 400, "group", /NUL/);
    await refused(raw("/units", { headers: JSON_TYPE, body: '[{"kind":"render"},{"kind":"render"},{"kind":"render"},{"kind":"render","ref":"\\u0000"}]' }), 400, "[3].ref", /NUL/);
    await refused(raw("/units", { headers: JSON_TYPE, body: '{"kind":"render","payload":{"a":{"b":["x","\\u0000"]}}}' }), 400, "payload.a.b[1]", /NUL/);
    await refused(raw("/units", { headers: JSON_TYPE, body: '{"kind":"render","payload":{"a\\u0000":1}}' }), 400, 'payload["a\\u0000"]', /key/);
  });

  it("a lone surrogate in any string or key is a 400 naming its path; a pair (an emoji) is kept as sent", async () => {
    await refused(raw("/units", { headers: JSON_TYPE, body: '{"kind":"render","ref":"order-\\ud800"}' }), 400, "ref", /surrogate/);
    await refused(raw("/units", { headers: JSON_TYPE, body: '[{"kind":"render"},{"kind":"render"},{"kind":"render","group":"\\udc00x"}]' }), 400, "[2].group", /surrogate/);
    await refused(raw("/units", { headers: JSON_TYPE, body: '{"kind":"render","payload":{"x":"\\ud83d"}}' }), 400, "payload.x", /surrogate/);
    await refused(raw("/units", { headers: JSON_TYPE, body: '{"kind":"render","payload":{"\\udfff":true}}' }), 400, 'payload["\\udfff"]', /surrogate/);
    const ok = await raw("/units", { headers: JSON_TYPE, body: '{"kind":"render","ref":"pair-\\ud83d\\ude00","payload":{"s":"\\\\ud800 is text here"}}' });
    expect(ok.status).toBe(201);
    expect(ok.body.unit).toMatchObject({ ref: "pair-😀", payload: { s: "\\ud800 is text here" } });
  });

  it("invalid UTF-8 bytes are a 400 naming body, so two different refs can never become one", async () => {
    const bytes = (ref: number[]) => new Uint8Array([...Buffer.from('{"kind":"render","ref":"'), ...ref, ...Buffer.from('"}')]);
    await refused(raw("/units", { headers: JSON_TYPE, body: bytes([0x61, 0xff]) }), 400, "body", /UTF-8/);
    await refused(raw("/units", { headers: JSON_TYPE, body: bytes([0x61, 0xfe]) }), 400, "body", /UTF-8/);
    // An encoded surrogate (CESU-8) and an overlong NUL are not UTF-8 either.
    await refused(raw("/units", { headers: JSON_TYPE, body: bytes([0xed, 0xa0, 0x80]) }), 400, "body", /UTF-8/);
    await refused(raw("/units", { headers: JSON_TYPE, body: bytes([0xc0, 0x80]) }), 400, "body", /UTF-8/);
    const ok = await raw("/units", { headers: JSON_TYPE, body: bytes([...Buffer.from("é€")]) });
    expect(ok.status).toBe(201);
    expect(ok.body.unit.ref).toBe("é€");
  });

  it("a path or query that is not UTF-8 once percent-decoded is refused: /groups/%FF and /groups/%25FF are not one group", async () => {
    await refused(raw("/groups/%FF", { method: "PUT", headers: JSON_TYPE, body: '{"weight":2}' }), 400, "path", /UTF-8/);
    await refused(raw("/groups/a%00b", { method: "PUT", headers: JSON_TYPE, body: '{"weight":2}' }), 400, "name", /NUL/);
    await refused(raw("/units?group=%ED%A0%80", { method: "GET" }), 400, "group", /UTF-8/);
    await refused(raw("/units?group=a%00", { method: "GET" }), 400, "group", /NUL/);
    expect((await raw("/groups/%25FF", { method: "PUT", headers: JSON_TYPE, body: '{"weight":2}' })).body.name).toBe("%FF");
  });
});

describe("payloads arrive as sent", () => {
  it("a number JSON.parse would change is a 400 naming its path; exact ones pass", async () => {
    const body = (n: string) => `{"kind":"render","payload":{"n":${n}}}`;
    for (const n of ["9007199254740993", "-9007199254740993", "1e400", "-1e400", "1e-400", "12345678901234567890", "1e20", "0.10000000000000000555", "1.00000000000000001"]) {
      await refused(raw("/units", { headers: JSON_TYPE, body: body(n) }), 400, "payload.n", /would not arrive as sent/);
    }
    await refused(raw("/units", { headers: JSON_TYPE, body: '[{"kind":"render","payload":[1,2,{"deep":[0,9007199254740993]}]}]' }), 400, "[0].payload[2].deep[1]");
    for (const n of ["9007199254740991", "-9007199254740991", "0.1", "1.5e-300", "5e-324", "1.0", "123.456"]) {
      const res = await raw("/units", { headers: JSON_TYPE, body: body(n) });
      expect(res.status, n).toBe(201);
      expect(res.body.unit.payload.n).toBe(Number(n));
    }
  });

  it("a JSON null payload is kept as null, not replaced by {}", async () => {
    const res = await raw("/units", { headers: JSON_TYPE, body: '{"kind":"render","payload":null}' });
    expect(res.status).toBe(201);
    expect(res.body.unit.payload).toBeNull();
  });

  it("nesting deeper than 100 levels is a 400 naming where, not a 500 from a stack overflow", async () => {
    const deep = (d: number) => `{"kind":"render","payload":${"[".repeat(d)}${"]".repeat(d)}}`;
    await refused(raw("/units", { headers: JSON_TYPE, body: deep(10_000) }), 400, `payload${"[0]".repeat(99)}`, /deeper than 100/);
    expect((await raw("/units", { headers: JSON_TYPE, body: deep(99) })).status).toBe(201);
  });
});

describe("bodies must say they are JSON", () => {
  it("text/plain, a form, or no Content-Type on a body is a 415 naming content-type", async () => {
    const body = '{"kind":"render"}';
    for (const type of ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/json; charset=latin1"]) {
      await refused(raw("/units", { headers: { "content-type": type }, body }), 415, "content-type", /application\/json/);
    }
    await refused(raw("/units", { body }), 415, "content-type");
    await refused(raw("/groups/g", { method: "PUT", headers: { "content-type": "text/plain" }, body: '{"weight":2}' }), 415, "content-type");
    expect((await raw("/units", { headers: { "content-type": "application/vnd.rtb+json; charset=utf-8" }, body })).status).toBe(201);
    // No body needs no Content-Type: POST /units/redrive with none redrives everything.
    expect((await raw("/units/redrive", { headers: { "content-type": "application/x-www-form-urlencoded" }, body: "" })).status).toBe(200);
  });
});

describe("no token does not mean any web page", () => {
  const page = { origin: "http://evil.example", "sec-fetch-site": "cross-site" };
  it("a cross-origin state change is a 403 naming origin, GET /go included; nothing changes", async () => {
    const requests: [string, Init][] = [
      ["/go", { method: "GET", headers: { "sec-fetch-site": "cross-site" } }],
      ["/go/", { method: "GET", headers: page }],
      ["/go", { method: "POST", headers: page }],
      ["/pause", { method: "POST", headers: { origin: "http://localhost:3000", "sec-fetch-site": "same-site", host: "localhost:8080" } }],
      ["/units", { headers: { ...page, "content-type": "text/plain" }, body: '{"kind":"render"}' }],
      ["/units", { headers: { origin: "null" , ...JSON_TYPE }, body: '{"kind":"render"}' }],
      ["/units/redrive", { headers: page }],
      ["/groups/g", { method: "PUT", headers: { ...page, ...JSON_TYPE }, body: '{"weight":3}' }],
      ["/units/1/cancel", { headers: page }],
    ];
    for (const [path, init] of requests) await refused(raw(path, init), 403, "origin", /another site/);
    expect((await call(api, "/")).body.dispatching).toBe(false);
  });

  it("the same site (Origin matching Host, or Sec-Fetch-Site same-origin or none), curl and the CLI (neither header) still work; reads stay open", async () => {
    expect((await raw("/units", { headers: { origin: "http://api.local:8080", host: "api.local:8080", "sec-fetch-site": "same-origin", ...JSON_TYPE }, body: '{"kind":"render"}' })).status).toBe(201);
    expect((await raw("/pause", { headers: { origin: "https://rtb.example", host: "internal:8080", "x-forwarded-host": "rtb.example" } })).status).toBe(200);
    expect((await raw("/go", { method: "GET", headers: { "sec-fetch-site": "none" } })).status).toBe(200);
    expect((await raw("/pause")).status).toBe(200);
    expect((await raw("/units", { method: "GET", headers: page })).status).toBe(200);
  });
});

describe("a 5xx never leaves a write behind", () => {
  it("a failure after the insert (reading the unit back for the answer) rolls the insert back", async () => {
    let armed = true;
    // The same api, on a database handle whose first SELECT after arming fails: the
    // statement that follows the INSERT in POST /units.
    const failing = api.database.db.withPlugin({
      transformQuery: (args) => {
        if (armed && args.node.kind === "SelectQueryNode") {
          armed = false;
          throw new Error("injected failure after the write");
        }
        return args.node;
      },
      transformResult: async (args) => args.result,
    });
    const app = createApp({
      db: failing,
      broker: api.broker,
      dispatcher: api.dispatcher,
      scheduler: api.scheduler,
      cancels: api.cancels,
      stats: api.stats,
      duties: api.duties,
      metrics: api.metrics.registry,
      logger: testLogger("api"),
      maxQueue: 50,
      auth: { reads: false },
      closing: new AbortController().signal,
      settings: { maxBatch: 100, maxBodyBytes: 1 << 20, maxPayloadBytes: 1 << 20, maxAttempts: 3, dispatchTimeoutMs: 30_000, processingTimeoutMs: 300_000, retention: { text: "0", ms: 0 }, broker: { host: "localhost:5672", vhost: "/", maxMessageBytes: 16 * 1024 * 1024 } },
    });
    const before = await total();
    const res = await app.request("/units", { method: "POST", headers: JSON_TYPE, body: '{"kind":"render","ref":"fails-after-insert"}' });
    expect(res.status).toBe(500);
    expect(armed).toBe(false);
    expect(await total()).toBe(before);
    // The producer retries: one unit, created now.
    const again = await call(api, "/units", "POST", { kind: "render", ref: "fails-after-insert" });
    expect(again.status).toBe(201);
  });
});

describe("a ref raced by a concurrent insert", () => {
  it("re-runs only the entry it did not find: the ref-less units beside it are written once", async () => {
    const other = await db.pool.connect();
    try {
      await other.query("BEGIN");
      await other.query("INSERT INTO units (kind, ref, max_attempts) VALUES ('render', 'raced-ref', 1)");
      // Blocks on the uncommitted ref; once that commits, this statement's snapshot cannot
      // see it, so its entry comes back empty and is looked up again.
      const racing = enqueueUnits(db.db, [
        { kind: "render", group: "raced", priority: 0, payload: {}, ref: null, maxAttempts: 1 },
        { kind: "render", group: "raced", priority: 0, payload: {}, ref: "raced-ref", maxAttempts: 1 },
      ]);
      await new Promise((r) => setTimeout(r, 300));
      await other.query("COMMIT");
      const results = await racing;
      expect(results.map((r) => r.created)).toEqual([true, false]);
    } finally {
      other.release();
    }
    const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM units WHERE group_name = 'raced'`.execute(db.db);
    expect(rows[0]!.n).toBe(1);
  });
});
