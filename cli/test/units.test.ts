import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sql } from "kysely";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openTestDb, useTestPlace } from "@rtb/testing";
import type { DbHandle } from "@rtb/db";
import { rtb, rtbJson, startListeningApi, type Listening } from "./support.ts";

/** Producing and managing units through the bin: enqueue, units, retry, cancel, redrive. */
const place = useTestPlace({ perTest: true });
let h: DbHandle;
let api: Listening;
let env: Record<string, string>;
let dir: string;

beforeEach(async () => {
  h = place.own(openTestDb(place));
  // An empty backlog to start with; nothing is dispatched unless a test says /go.
  api = place.own(await startListeningApi(place, { RTB_SEED_UNITS: "0" }));
  env = { RTB_API_URL: api.url };
  dir = await mkdtemp(join(tmpdir(), "rtb-cli-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const units = () => h.db.selectFrom("units").selectAll().orderBy("id").execute();

/** Mark units as failed for good, as an agent's final error would leave them. */
const fail = (ids: number[]) =>
  sql`UPDATE units SET status = 'error', attempt = max_attempts, last_error = 'boom' WHERE id = ANY(${ids}::bigint[])`.execute(h.db);

describe("rtb enqueue", () => {
  it("enqueues one unit from flags, and not twice with the same ref", async () => {
    const r = await rtb(["enqueue", "--kind", "render", "--group", "acme", "--priority", "3", "--payload", '{"scene":7}', "--ref", "order-1", "--max-attempts", "2"], env);
    expect(r).toMatchObject({ code: 0, stdout: "created unit 1 (ref order-1): render, group acme, pending\n" });
    const again = await rtbJson(["enqueue", "--kind", "render", "--ref", "order-1"], env);
    expect(again).toMatchObject({ created: false, unit: { id: 1, ref: "order-1", kind: "render", group: "acme", priority: 3, payload: { scene: 7 }, maxAttempts: 2, status: "pending" } });
    expect(await units()).toHaveLength(1);
  });

  it("enqueues a delayed unit with --run-at or --delay-ms, and the api's refusal of a bad time names the field", async () => {
    const at = new Date(Date.now() + 3_600_000).toISOString();
    expect(await rtbJson(["enqueue", "--kind", "later", "--run-at", at], env)).toMatchObject({ created: true, unit: { kind: "later", status: "pending", notBefore: at } });
    const delayed = await rtbJson(["enqueue", "--kind", "later", "--delay-ms", "60000"], env);
    expect(Date.parse(delayed.unit.notBefore)).toBeGreaterThan(Date.now() + 50_000);
    expect(await rtb(["enqueue", "--kind", "later", "--run-at", "tomorrow"], env)).toMatchObject({ code: 1, stderr: expect.stringContaining("runAt") });
    expect(await rtb(["enqueue", "--kind", "later", "--delay-ms", "-5"], env)).toMatchObject({ code: 2, stderr: expect.stringContaining("--delay-ms") });
  });

  it("sends --callback-url; the api's refusal names callbackUrl (this api has no RTB_WEBHOOK_ALLOWED_HOSTS: callbacks off)", async () => {
    const r = await rtb(["enqueue", "--kind", "hook", "--callback-url", "http://hooks.test/done"], env);
    expect(r).toMatchObject({ code: 1, stderr: expect.stringContaining("callbackUrl") });
    expect(r.stderr).toContain("callbacks are off");
    expect(await units()).toHaveLength(0);
  });

  it("enqueues a unit that waits for others with --depends-on (ids and refs) and --on-failure; bad ones are refused", async () => {
    const parent = await rtbJson(["enqueue", "--kind", "render", "--ref", "scene-7"], env);
    const other = await rtbJson(["enqueue", "--kind", "render"], env);
    const child = await rtbJson(["enqueue", "--kind", "encode", "--depends-on", `scene-7,${other.unit.id}`, "--on-failure", "ignore"], env);
    expect(child).toMatchObject({ created: true, unit: { kind: "encode", status: "blocked", waitingOn: 2 } });
    const { rows } = await sql<{ depends_on: string; on_failure: string }>`SELECT depends_on, on_failure FROM unit_deps WHERE unit_id = ${child.unit.id} ORDER BY depends_on`.execute(h.db);
    expect(rows.map((r) => [Number(r.depends_on), r.on_failure])).toEqual([[parent.unit.id, "ignore"], [other.unit.id, "ignore"]]);
    // The api's refusal of an unknown ref names dependsOn; usage errors never reach it.
    expect(await rtb(["enqueue", "--kind", "encode", "--depends-on", "no-such-ref"], env)).toMatchObject({ code: 1, stderr: expect.stringContaining("dependsOn") });
    expect(await rtb(["enqueue", "--kind", "encode", "--on-failure", "ignore"], env)).toMatchObject({ code: 2, stderr: expect.stringContaining("--on-failure applies to --depends-on") });
    expect(await rtb(["enqueue", "--kind", "encode", "--depends-on", "1", "--on-failure", "maybe"], env)).toMatchObject({ code: 2, stderr: expect.stringContaining("--on-failure: expected cancel, fail, ignore") });
    expect(await rtb(["enqueue", "--kind", "encode", "--depends-on", "1,,2"], env)).toMatchObject({ code: 2, stderr: expect.stringContaining("--depends-on: expected") });
    expect(await units()).toHaveLength(3);
  });

  it("lists the units waiting on a clock with --waiting, and status says when the first is due", async () => {
    const at = new Date(Date.now() + 3_600_000).toISOString();
    await rtbJson(["enqueue", "--kind", "later", "--run-at", at], env);
    await rtbJson(["enqueue", "--kind", "now"], env);
    const page = await rtbJson(["units", "--waiting", "clock"], env);
    expect(page.units.map((u: { kind: string }) => u.kind)).toEqual(["later"]);
    expect(page.backlog).toEqual({ ready: 1, onClock: 1, forAgents: 0, nextDueAt: at });
    expect((await rtb(["status"], env)).stdout).toMatch(/^backlog +1 ready, 1 on a clock \(next due in (59m|1h)[^)]*\), 0 waiting for an agent$/m);
    expect(await rtb(["units", "--waiting", "soon"], env)).toMatchObject({ code: 2, stderr: expect.stringContaining("--waiting") });
  });

  it("refuses bad flags before sending anything (exit 2)", async () => {
    expect(await rtb(["enqueue"], env)).toMatchObject({ code: 2, stderr: expect.stringContaining("give --kind (one unit) or --file (many)") });
    expect(await rtb(["enqueue", "--kind", "a b"], env)).toMatchObject({ code: 2, stderr: expect.stringContaining("--kind: expected") });
    expect(await rtb(["enqueue", "--kind", "x", "--payload", "{nope"], env)).toMatchObject({ code: 2, stderr: expect.stringContaining("--payload: not valid JSON") });
    expect(await rtb(["enqueue", "--file", join(dir, "missing.ndjson")], env)).toMatchObject({ code: 2, stderr: expect.stringContaining("missing.ndjson") });
    expect(await units()).toHaveLength(0);
  });

  it("sends an NDJSON file in chunks, flags filling in what records leave out, and reports the totals", async () => {
    const lines = Array.from({ length: 23 }, (_, i) => JSON.stringify({ ref: `r-${i + 1}`, payload: { i: i + 1 }, ...(i % 2 ? { kind: "odd" } : {}) }));
    const file = join(dir, "units.ndjson");
    await writeFile(file, `${lines.slice(0, 10).join("\n")}\n\n${lines.slice(10).join("\r\n")}\n`);
    const r = await rtb(["enqueue", "--file", file, "--kind", "even", "--group", "g1", "--chunk-size", "5"], env);
    expect(r).toMatchObject({ code: 0, stdout: "enqueued 23 units in 5 requests: 23 created, 0 already existed\n" });
    const all = await units();
    expect(all.map((u) => u.ref)).toEqual(lines.map((_, i) => `r-${i + 1}`));
    expect(all.map((u) => u.kind).slice(0, 3)).toEqual(["even", "odd", "even"]);
    expect(new Set(all.map((u) => u.group_name))).toEqual(new Set(["g1"]));

    // Again with --json, from stdin, two of them new: every unit in input order, and the totals.
    const more = `${lines.slice(20).join("\n")}\n${JSON.stringify({ kind: "even", ref: "r-24" })}\n${JSON.stringify({ kind: "even", ref: "r-25" })}\n`;
    const json = await rtbJson(["enqueue", "--file", "-", "--kind", "even", "--chunk-size", "2"], env, more);
    expect(json).toMatchObject({ created: 2, existing: 3, requests: 3 });
    expect(json.units.map((u: { ref: string; created: boolean }) => [u.ref, u.created])).toEqual([
      ["r-21", false],
      ["r-22", false],
      ["r-23", false],
      ["r-24", true],
      ["r-25", true],
    ]);
    expect(json.units[0]).toEqual({ id: 21, ref: "r-21", status: "pending", created: false });
  });

  it("reads a JSON array too", async () => {
    const file = join(dir, "units.json");
    await writeFile(file, JSON.stringify([{ kind: "a" }, { kind: "b", priority: 9 }], null, 2));
    expect(await rtb(["enqueue", "-f", file], env)).toMatchObject({ code: 0, stdout: "enqueued 2 units in 1 request: 2 created, 0 already existed\n" });
    expect((await units()).map((u) => [u.kind, u.priority])).toEqual([
      ["a", 0],
      ["b", 9],
    ]);
  });

  it("splits a chunk the api finds too large (413) and sends the halves", async () => {
    const small = await startListeningApi(place, { RTB_SEED_UNITS: "0", RTB_API_MAX_BODY_BYTES: "1024" });
    try {
      const rows = Array.from({ length: 8 }, (_, i) => JSON.stringify({ kind: "big", ref: `b-${i}`, payload: { blob: "x".repeat(300) } }));
      const json = await rtbJson(["enqueue", "--file", "-", "--chunk-size", "8"], { RTB_API_URL: small.url }, rows.join("\n"));
      expect(json).toMatchObject({ created: 8, existing: 0 });
      expect(json.requests).toBeGreaterThan(1);
      expect(json.units.map((u: { ref: string }) => u.ref)).toEqual(rows.map((_, i) => `b-${i}`));
    } finally {
      await small.api.stop();
    }
  });

  it("stops at the first refused chunk, naming the line and the field; the chunks before it stay", async () => {
    const file = join(dir, "bad.ndjson");
    const rows = [{ kind: "ok" }, { kind: "ok" }, { kind: "ok" }, { kind: "not ok!" }, { kind: "ok" }];
    await writeFile(file, rows.map((r) => JSON.stringify(r)).join("\n"));
    const r = await rtb(["enqueue", "-f", file, "--chunk-size", "2"], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^rtb enqueue: the api refused line 4: .+ \(field: kind\); its request \(line 3 to line 4\) wrote nothing; before it, 2 units were enqueued \(2 created, 0 already existed\)\n$/);
    expect(await units()).toHaveLength(2);

    // --json still prints one whole document, with the error.
    const j = await rtb(["enqueue", "-f", file, "--chunk-size", "2", "--json"], env);
    expect(j.code).toBe(1);
    expect(JSON.parse(j.stdout)).toMatchObject({ created: 2, existing: 0, requests: 1, error: { error: "invalid_request", field: "[1].kind", status: 400, where: "line 4" } });

    // A line that is not JSON is named too.
    await writeFile(file, '{"kind":"ok"}\n{"kind":\n');
    expect(await rtb(["enqueue", "-f", file], env)).toMatchObject({ code: 1, stderr: expect.stringContaining("rtb enqueue: line 2: not valid JSON") });
  });
});

describe("rtb units", () => {
  it("lists units newest first with filters, pages with --after, and follows every page with --all", async () => {
    await rtb(["enqueue", "--file", "-", "--chunk-size", "100"], env, Array.from({ length: 12 }, (_, i) => JSON.stringify({ kind: i < 8 ? "a" : "b", group: `g${i % 2}` })).join("\n"));
    await fail([2, 3]);

    const page = await rtbJson(["units", "--limit", "5"], env);
    expect(page.units.map((u: { id: number }) => u.id)).toEqual([12, 11, 10, 9, 8]);
    expect(page.nextCursor).toEqual(expect.any(String));
    const nextPage = await rtbJson(["units", "--limit", "5", "--after", page.nextCursor], env);
    expect(nextPage.units.map((u: { id: number }) => u.id)).toEqual([7, 6, 5, 4, 3]);

    const all = await rtbJson(["units", "--limit", "5", "--all"], env);
    expect(all).toEqual({ units: expect.any(Array), nextCursor: null });
    expect(all.units.map((u: { id: number }) => u.id)).toEqual([12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1]);

    const filtered = await rtbJson(["units", "--status", "error", "--kind", "a"], env);
    expect(filtered.units.map((u: { id: number }) => u.id)).toEqual([3, 2]);
    expect((await rtbJson(["units", "--kind", "b", "--group", "g1"], env)).units.map((u: { id: number }) => u.id)).toEqual([12, 10]);
    expect((await rtbJson(["units", "-s", "pending", "-s", "error", "--kind", "b"], env)).units).toHaveLength(4);

    const table = await rtb(["units", "--status", "error,cancelled"], env);
    expect(table.code).toBe(0);
    expect(table.stdout.trimEnd().split("\n")).toEqual([
      expect.stringMatching(/^id +kind +group +priority +status +attempt +updated +last error$/),
      expect.stringMatching(/^ 3 +a +g0 +0 +error +3\/3 +\S+ \S+ +boom$/),
      expect.stringMatching(/^ 2 +a +g1 +0 +error +3\/3 +\S+ \S+ +boom$/),
    ]);
    const more = await rtb(["units", "--limit", "2"], env);
    expect(more.stdout).toMatch(/\nmore: add --after \S+ \(or --all\)\n$/);
    expect(await rtb(["units", "--status", "lost"], env)).toMatchObject({ code: 2, stderr: expect.stringContaining('--status: "lost" is not a status') });
    expect((await rtb(["units", "--kind", "none"], env)).stdout).toBe("no units match\n");
  });
});

describe("rtb units --ref", () => {
  it("finds the unit enqueued with a ref, exactly, and nothing for an unknown one", async () => {
    await rtb(["enqueue", "--file", "-"], env, [{ kind: "a", ref: "order-7" }, { kind: "a", ref: "order-77" }, { kind: "a" }].map((u) => JSON.stringify(u)).join("\n"));
    const found = await rtbJson(["units", "--ref", "order-7"], env);
    expect(found).toEqual({ units: [expect.objectContaining({ id: 1, ref: "order-7" })], nextCursor: null, backlog: expect.objectContaining({ ready: 3 }) });
    expect((await rtb(["units", "--ref", "order-"], env)).stdout).toBe("no units match\n");
    expect(await rtb(["units", "--ref", "r".repeat(201)], env)).toMatchObject({ code: 1, stderr: expect.stringContaining("(field: ref)") });
  });
});

describe("rtb retry, cancel", () => {
  it("retries errored units by id, refuses the others by name, and redrives every error", async () => {
    await rtb(["seed", "6", "--kind", "k", "--groups", "2"], { ...place.env });
    await fail([1, 2, 3, 4, 5]);

    const r = await rtb(["retry", "1", "6", "2"], env);
    expect(r.code).toBe(1);
    // A retried unit gets at least one more attempt.
    expect(r.stdout).toBe("unit 1: back in the backlog (pending, attempt 3 of 4)\nunit 2: back in the backlog (pending, attempt 3 of 4)\n");
    expect(r.stderr).toMatch(/^rtb retry: unit 6 is pending; .+ \(field: status\)\n$/);

    const json = await rtb(["retry", "3", "999", "--json"], env);
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout)).toEqual([
      { id: 3, unit: expect.objectContaining({ id: 3, status: "pending" }) },
      { id: 999, error: expect.objectContaining({ status: 404, error: "not_found" }) },
    ]);

    // Units 4 and 5 are still errors; one of them in group customer-1.
    expect(await rtbJson(["retry", "--all-errors", "--group", "customer-1"], env)).toEqual({ retried: 1 });
    expect(await rtb(["retry", "--all-errors"], env)).toMatchObject({ code: 0, stdout: "1 errored unit back in the backlog (pending)\n" });
    expect((await units()).every((u) => u.status === "pending")).toBe(true);
    expect(await rtb(["retry", "--all-errors", "4"], env)).toMatchObject({ code: 2, stderr: expect.stringContaining("not both") });
  });

  it("cancels pending units, and a cancelled unit can be retried", async () => {
    await rtb(["seed", "3"], { ...place.env });
    expect(await rtb(["cancel", "1", "2"], env)).toMatchObject({ code: 0, stdout: "unit 1: cancelled\nunit 2: cancelled\n" });
    const again = await rtb(["cancel", "2"], env);
    expect(again).toMatchObject({ code: 1, stdout: "", stderr: expect.stringMatching(/^rtb cancel: unit 2 is cancelled; .+ \(field: status\)\n$/) });
    expect((await rtbJson(["retry", "2"], env))[0]).toMatchObject({ id: 2, unit: { status: "pending" } });
    expect((await units()).map((u) => u.status)).toEqual(["cancelled", "pending", "pending"]);
  });

  it("cancels every unit of a group (or kind, or status) at once; a bad filter is the api's 400 naming it", async () => {
    await rtb(["seed", "6", "--groups", "2"], { ...place.env });
    const group = (await units())[0]!.group_name;
    const n = (await units()).filter((u) => u.group_name === group).length;
    expect(await rtb(["cancel", "--group", group], env)).toMatchObject({ code: 0, stdout: `${n} units cancelled (0 in flight: their agents were told)\n` });
    expect((await units()).filter((u) => u.status === "cancelled").map((u) => u.group_name)).toEqual(Array(n).fill(group));
    expect(await rtbJson(["cancel", "--status", "pending,dispatched"], env)).toEqual({ cancelled: 6 - n, inFlight: 0 });
    expect(await rtb(["cancel", "--status", "success"], env)).toMatchObject({ code: 1, stderr: expect.stringContaining("(field: status)") });
    expect(await rtb(["cancel", "--group", group, "4"], env)).toMatchObject({ code: 2, stderr: expect.stringContaining("not both") });
    expect(await rtb(["cancel"], env)).toMatchObject({ code: 2 });
  });
});
