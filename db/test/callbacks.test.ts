import { sql } from "kysely";
import { beforeAll, describe, expect, it } from "vitest";
import {
  addDependencies,
  applyStatusUpdates,
  asDuty,
  cancelUnit,
  enqueueUnits,
  enqueueWorkflow,
  expireProcessing,
  pruneBatch,
  pruneDue,
  retryUnit,
  setGroupShare,
  unitCallbacks,
  type Db,
  type DbHandle,
} from "@rtb/db";
import { callbackPayload } from "@rtb/protocol";
import { openTestDb, useTestPlace } from "@rtb/testing";
import { migrations } from "../src/migrations/index.ts";

/**
 * The trigger of migration 0013 (units_callback_update, times and ids fixed by 0014): one
 * delivery per end of a unit, written in the transaction that ends it, whichever path that is;
 * retention deletes them with their units once none is pending.
 */
const place = useTestPlace();
let handle: DbHandle;
let db: Db;
const opts = { retryBaseMs: 1_000, retryMaxMs: 1_000 };

beforeAll(() => {
  handle = place.own(openTestDb(place));
  db = handle.db;
});

/** A unit in `status` at `attempt`, with `url` as its callback (or none). */
async function unit(status: string, opts: { attempt?: number; maxAttempts?: number; url?: string | null; group?: string; ageMs?: number } = {}): Promise<number> {
  const { rows } = await sql<{ id: number }>`
    INSERT INTO units (kind, group_name, payload, status, attempt, max_attempts, dispatched_at, callback_url, updated_at)
    VALUES ('k', ${opts.group ?? "g"}, '{}', ${status}, ${opts.attempt ?? 1}, ${opts.maxAttempts ?? 3}, now(), ${opts.url === undefined ? "http://hooks.test/u" : opts.url},
            now() - make_interval(secs => ${(opts.ageMs ?? 0) / 1000}))
    RETURNING id`.execute(db);
  return Number(rows[0]!.id);
}

const report = (unitId: number, status: "success" | "error", extra: object = {}) =>
  applyStatusUpdates(db, [{ unitId, attempt: 1, status, at: new Date(), source: "agent:t", ...extra }], opts);
const bodies = async (id: number, on: Db = db) => (await on.selectFrom("callbacks").select(["body", "url"]).where("unit_id", "=", id).orderBy("id").execute()) as { body: any; url: string }[];
/** The body of unit `id`'s first delivery. */
const firstBody = async (id: number, on: Db = db) => {
  const [first] = await bodies(id, on);
  expect(first, `unit ${id}'s delivery`).toBeDefined();
  return first!.body;
};
/** The body's problems against the published schema (/openapi.json webhooks.unitFinished); [] when it matches. */
const schemaProblems = (body: unknown) => callbackPayload.safeParse(body).error?.issues.map((i) => `${i.path.join(".")}: ${i.message}`) ?? [];
const ISO_Z = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const updatedAt = async (id: number, on: Db = db) => (await on.selectFrom("units").select("updated_at").where("id", "=", id).executeTakeFirstOrThrow()).updated_at;

/** End unit `id` (success) in a transaction whose session TimeZone is `zone`; the offset now() shows in it. */
async function endInZone(on: Db, id: number, zone: string): Promise<string> {
  return on.transaction().execute(async (trx) => {
    await sql`SELECT set_config('TimeZone', ${zone}, true)`.execute(trx);
    await sql`UPDATE units SET status = 'success', updated_at = now() WHERE id = ${id}`.execute(trx);
    return (await sql<{ now: string }>`SELECT now()::text AS now`.execute(trx)).rows[0]!.now;
  });
}

describe("the callbacks trigger", () => {
  it("writes one delivery for a success, a permanent error and a reconciler's expiry, none for a retry", async () => {
    const ok = await unit("processing");
    const bad = await unit("processing");
    const retried = await unit("processing");
    const expired = await unit("processing", { attempt: 3, maxAttempts: 3, ageMs: 60_000 });
    await report(ok, "success", { result: { n: 1 } });
    await report(bad, "error", { error: { message: "boom", retryable: false } });
    await report(retried, "error", { error: { message: "again", retryable: true } });
    await expireProcessing(db, 1_000, opts);
    expect((await bodies(ok)).map((b) => b.body.data)).toMatchObject([{ id: ok, status: "success", attempt: 1, result: { n: 1 }, error: null, workflow: null }]);
    expect((await bodies(bad)).map((b) => b.body.data)).toMatchObject([{ status: "error", error: "boom" }]);
    expect(await bodies(retried)).toEqual([]);
    expect((await bodies(expired)).map((b) => b.body.data)).toMatchObject([{ status: "error", attempt: 3, error: expect.stringContaining("RTB_PROCESSING_TIMEOUT_MS") }]);
    // A duplicate report changes nothing, so writes nothing.
    await report(ok, "success");
    expect(await bodies(ok)).toHaveLength(1);
    for (const id of [ok, bad, expired]) {
      const body = await firstBody(id);
      expect(schemaProblems(body), `unit ${id}'s body`).toEqual([]);
      expect(body.data.finishedAt).toBe((await updatedAt(id)).toISOString());
    }
  });

  it("writes its times in UTC with Z, to the millisecond, as the schema says, whatever the session's TimeZone", async () => {
    const id = await unit("processing");
    // The session's offset shows in now()::text: this transaction runs in Paris time.
    expect(await endInZone(db, id, "Europe/Paris")).toMatch(/\+0[12]$/);
    const body = await firstBody(id);
    expect(schemaProblems(body)).toEqual([]);
    expect(body.timestamp).toMatch(ISO_Z);
    expect(body.data.finishedAt).toMatch(ISO_Z);
    // The unit's updatedAt exactly (node-postgres truncates to the millisecond, as to_char's MS does).
    expect(body.data.finishedAt).toBe((await updatedAt(id)).toISOString());
    // now() is the transaction's start, the update's updated_at too: the same instant.
    expect(body.timestamp).toBe(body.data.finishedAt);
  });

  it("writes one for a cancel, in any status, and nothing when the transaction rolls back", async () => {
    const pending = await unit("pending", { attempt: 0 });
    expect((await cancelUnit(db, pending)).outcome).toBe("done");
    expect((await bodies(pending)).map((b) => b.body.data)).toMatchObject([{ status: "cancelled", attempt: 0 }]);

    const rolled = await unit("processing");
    await expect(
      db.transaction().execute(async (trx) => {
        await sql`UPDATE units SET status = 'success' WHERE id = ${rolled}`.execute(trx);
        expect(await trx.selectFrom("callbacks").select("id").where("unit_id", "=", rolled).execute()).toHaveLength(1);
        throw new Error("rolled back");
      }),
    ).rejects.toThrow("rolled back");
    expect(await bodies(rolled)).toEqual([]);
  });

  it("takes the group's URL when the unit names none, the unit's when it does, and none when neither has one", async () => {
    await setGroupShare(db, "with-hook", { callbackUrl: "http://hooks.test/group" });
    const fromGroup = await unit("processing", { url: null, group: "with-hook" });
    const own = await unit("processing", { group: "with-hook" });
    const none = await unit("processing", { url: null, group: "no-hook" });
    await applyStatusUpdates(db, [fromGroup, own, none].map((unitId) => ({ unitId, attempt: 1, status: "success" as const, at: new Date(), source: "agent:t" })), opts);
    expect((await bodies(fromGroup)).map((b) => b.url)).toEqual(["http://hooks.test/group"]);
    expect((await bodies(own)).map((b) => b.url)).toEqual(["http://hooks.test/u"]);
    expect(await bodies(none)).toEqual([]);
  });

  it("a workflow's cascade writes one for each step it closes, naming the workflow and step", async () => {
    await setGroupShare(db, "wf-hooks", { callbackUrl: "http://hooks.test/wf" });
    const step = (name: string, dependsOn: string[]) => ({
      step: name,
      unit: { kind: "k", group: "wf-hooks", priority: 0, payload: {}, ref: null, maxAttempts: 1 },
      dependsOn: dependsOn.map((s) => ({ step: s })),
    });
    const { id: wf } = await enqueueWorkflow(db, { name: "order", ref: null, onFailure: "cancel", steps: [step("a", []), step("b", ["a"]), step("c", ["b"])] });
    const ids = Object.fromEntries((await db.selectFrom("units").select(["id", "step"]).where("workflow_id", "=", wf).execute()).map((r) => [r.step!, Number(r.id)]));
    await sql`UPDATE units SET status = 'processing', attempt = 1, dispatched_at = now() WHERE id = ${ids.a!}`.execute(db);
    await report(ids.a!, "error", { error: { message: "failed", retryable: false } });
    for (const s of ["b", "c"]) {
      expect((await bodies(ids[s]!)).map((b) => b.body.data)).toMatchObject([{ status: "cancelled", workflow: { id: wf, step: s } }]);
    }
    expect((await bodies(ids.a!)).map((b) => b.body.data)).toMatchObject([{ status: "error", workflow: { id: wf, step: "a" } }]);
  });

  it("a unit that ends again after a retry gets a second delivery (another webhook-id); a finished unit gaining a dependent gets none", async () => {
    const id = await unit("processing");
    await report(id, "error", { error: { message: "once", retryable: false } });
    expect((await retryUnit(db, id)).outcome).toBe("done");
    await sql`UPDATE units SET status = 'processing', attempt = 2 WHERE id = ${id}`.execute(db);
    await applyStatusUpdates(db, [{ unitId: id, attempt: 2, status: "success", at: new Date(), source: "agent:t" }], opts);
    const deliveries = await unitCallbacks(db, id);
    expect(deliveries.map((d) => d.state)).toEqual(["pending", "pending"]);
    expect(new Set(deliveries.map((d) => d.webhookId)).size).toBe(2);
    for (const d of deliveries) expect(d.webhookId).toMatch(/^msg_[0-9a-f]{32}$/);

    // has_dependents is set on the finished unit (an UPDATE of a terminal row): not an end.
    const [dependent] = await enqueueUnits(db, [{ kind: "k", group: "g", priority: 0, payload: {}, ref: null, maxAttempts: 1, dependencies: 1 }]);
    await addDependencies(db, [{ unitId: dependent!.id, dependsOn: id, onFailure: "cancel" }]);
    expect(await unitCallbacks(db, id)).toHaveLength(2);
  });
});

describe("retention", () => {
  const prune = async (on: Db = db) => {
    const r = await asDuty(on, "retention", (trx) => pruneBatch(trx, { retentionMs: 3_600_000, limit: 1_000, by: "test" }));
    if (!r.ran) throw new Error("the retention duty was held");
    return r.value;
  };
  const settle = (id: number, state: "delivered" | "given_up") => sql`UPDATE callbacks SET state = ${state}, finished_at = now() WHERE unit_id = ${id}`.execute(db);
  const exists = async (id: number) => (await db.selectFrom("units").select("id").where("id", "=", id).executeTakeFirst()) !== undefined;
  const twoHoursAgo = (id: number) => sql`UPDATE units SET updated_at = now() - interval '2 hours' WHERE id = ${id}`.execute(db);

  it("deletes a pruned unit's deliveries with it, and leaves those of units kept", async () => {
    const old = await unit("processing");
    const kept = await unit("processing");
    await report(old, "success");
    await report(kept, "success");
    await settle(old, "delivered");
    await twoHoursAgo(old);
    await prune();
    expect(await exists(old)).toBe(false);
    expect(await bodies(old)).toEqual([]);
    expect(await bodies(kept)).toHaveLength(1);
  });

  it("keeps a unit past the retention while a delivery of it is pending (at least once), and prunes it once delivered or given up", async () => {
    const waiting = await unit("processing");
    const givenUp = await unit("processing");
    // Ended twice (retried by an operator): one delivery settled, one still pending.
    const twice = await unit("processing");
    for (const id of [waiting, givenUp, twice]) await report(id, "success");
    await settle(twice, "delivered");
    await sql`UPDATE units SET status = 'processing' WHERE id = ${twice}`.execute(db);
    await report(twice, "success");
    for (const id of [waiting, givenUp, twice]) await twoHoursAgo(id);
    await settle(givenUp, "given_up");

    const before = await pruneDue(db, 3_600_000, 1_000);
    await prune();
    expect(await exists(givenUp)).toBe(false);
    expect(await bodies(givenUp)).toEqual([]);
    for (const id of [waiting, twice]) {
      expect(await exists(id), `unit ${id}`).toBe(true);
      expect((await unitCallbacks(db, id)).some((d) => d.state === "pending")).toBe(true);
    }
    expect((await unitCallbacks(db, twice)).map((d) => d.state)).toEqual(["delivered", "pending"]);
    // Not due either: GET /'s retention.due counts only what a pass would prune.
    expect(await pruneDue(db, 3_600_000, 1_000)).toBe(before - 1);

    await settle(waiting, "delivered");
    await settle(twice, "given_up");
    expect(await pruneDue(db, 3_600_000, 1_000)).toBe(before + 1);
    await prune();
    for (const id of [waiting, twice]) {
      expect(await exists(id)).toBe(false);
      expect(await bodies(id)).toEqual([]);
    }
  });
});

describe("webhook ids", () => {
  // Two installations (or a database and its restored copy): the same row ids, each from 1.
  const staging = useTestPlace();
  const production = useTestPlace();

  it("differ between two databases whose deliveries have the same row ids", async () => {
    const dbs = [staging.own(openTestDb(staging)).db, production.own(openTestDb(production)).db];
    const seen: { rowId: number; webhookId: string }[] = [];
    for (const on of dbs) {
      const { rows } = await sql<{ id: number }>`
        INSERT INTO units (kind, group_name, payload, status, attempt, max_attempts, dispatched_at, callback_url)
        VALUES ('k', 'g', '{}', 'processing', 1, 3, now(), 'http://hooks.test/u') RETURNING id`.execute(on);
      const id = Number(rows[0]!.id);
      await sql`UPDATE units SET status = 'success' WHERE id = ${id}`.execute(on);
      const [row] = await on.selectFrom("callbacks").select("id").where("unit_id", "=", id).execute();
      const [delivery] = await unitCallbacks(on, id);
      seen.push({ rowId: Number(row!.id), webhookId: delivery!.webhookId });
    }
    expect(seen[0]!.rowId).toBe(seen[1]!.rowId);
    expect(seen[0]!.webhookId).not.toBe(seen[1]!.webhookId);
    for (const s of seen) expect(s.webhookId).toMatch(/^msg_[0-9a-f]{32}$/);
  });
});

describe("migration 0014", () => {
  const place14 = useTestPlace();

  it("rewrites the times of deliveries still pending and gives each delivery its own webhook id; down restores 0013", async () => {
    const on = place14.own(openTestDb(place14)).db;
    const m = migrations["0014_callback_times"]!;
    await m.down!(on);
    const insert = async () => {
      const { rows } = await sql<{ id: number }>`
        INSERT INTO units (kind, group_name, payload, status, attempt, max_attempts, dispatched_at, callback_url)
        VALUES ('k', 'g', '{}', 'processing', 1, 3, now(), 'http://hooks.test/u') RETURNING id`.execute(on);
      return Number(rows[0]!.id);
    };
    const pending = await insert();
    const sent = await insert();
    await endInZone(on, pending, "Europe/Paris");
    await endInZone(on, sent, "Europe/Paris");
    // What 0013 wrote: the session's offset, microseconds.
    const old = await firstBody(pending, on);
    expect(old.timestamp).toMatch(/\+0[12]:00$/);
    expect(schemaProblems(old)).not.toEqual([]);
    await sql`UPDATE callbacks SET state = 'delivered' WHERE unit_id = ${sent}`.execute(on);

    await m.up(on);
    const body = await firstBody(pending, on);
    expect(schemaProblems(body)).toEqual([]);
    expect(body.data.finishedAt).toBe((await updatedAt(pending, on)).toISOString());
    expect(Date.parse(body.timestamp)).toBe(Math.floor(Date.parse(old.timestamp)));
    expect({ ...body, timestamp: null, data: { ...body.data, finishedAt: null } }).toEqual({ ...old, timestamp: null, data: { ...old.data, finishedAt: null } });
    // A delivery sent is left as it was.
    expect((await bodies(sent, on))[0]!.body.timestamp).toMatch(/\+0[12]:00$/);
    const ids = (await on.selectFrom("callbacks").select("webhook_id").execute()).map((r) => r.webhook_id);
    expect(new Set(ids).size).toBe(2);
  });
});

describe("migration 0015", () => {
  const place15 = useTestPlace();

  it("keys the deliveries already there by host and indexes the pending ones by host; down drops both", async () => {
    const on = place15.own(openTestDb(place15)).db;
    const m = migrations["0015_callback_hosts"]!;
    const hasHost = async () => (await sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_attribute WHERE attrelid = 'callbacks'::regclass AND attname = 'host' AND NOT attisdropped`.execute(on)).rows[0]!.n === 1;
    const hasIndex = async () => (await sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_indexes WHERE indexname = 'callbacks_pending_by_host'`.execute(on)).rows[0]!.n === 1;
    await m.down!(on);
    expect([await hasHost(), await hasIndex()]).toEqual([false, false]);
    const urls = ["https://a.example/x", "http://b.example:8080/y", "https://[::1]:8443/z"];
    for (const url of urls) {
      const { rows } = await sql<{ id: number }>`
        INSERT INTO units (kind, group_name, payload, status, attempt, max_attempts, dispatched_at, callback_url)
        VALUES ('k', 'g', '{}', 'processing', 1, 3, now(), ${url}) RETURNING id`.execute(on);
      await sql`UPDATE units SET status = 'success' WHERE id = ${rows[0]!.id}`.execute(on);
    }
    await m.up(on);
    expect([await hasHost(), await hasIndex()]).toEqual([true, true]);
    const { rows } = await sql<{ host: string }>`SELECT host FROM callbacks ORDER BY id`.execute(on);
    expect(rows.map((r) => r.host)).toEqual(urls.map((u) => new URL(u).host));
  });
});
