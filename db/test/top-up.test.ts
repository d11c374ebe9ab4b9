import { beforeAll, beforeEach, describe, expect, inject, it } from "vitest";
import { sql } from "kysely";
import { checkTallies, claimTopUp, compactTallies, createDb, explainDispatch, nextInLine, nextRetryAt, setDispatching, type DbHandle } from "@rtb/db";
import { OUTSTANDING } from "@rtb/protocol";
import { openTestDb, testLogger, useTestPlace } from "@rtb/testing";

const place = useTestPlace();
let h: DbHandle;

beforeAll(() => {
  h = place.own(openTestDb(place));
});
beforeEach(async () => {
  await sql`TRUNCATE units, unit_events, unit_groups, status_tallies, ready_deltas, ready_counts, ready_levels`.execute(h.db);
  await setDispatching(h.db, true);
});

async function addUnits(rows: { group?: string; priority?: number; notBefore?: Date }[]): Promise<number[]> {
  const inserted = await h.db
    .insertInto("units")
    .values(rows.map((r) => ({ kind: "simulate", group_name: r.group ?? "g", priority: r.priority ?? 0, payload: "{}", status: "pending" as const, max_attempts: 3, not_before: r.notBefore ?? null })))
    .returning("id")
    .execute();
  return inserted.map((r) => r.id);
}

const outstanding = async () =>
  (await h.db.selectFrom("units").select((eb) => eb.fn.countAll<number>().as("n")).where("status", "in", OUTSTANDING).executeTakeFirstOrThrow()).n;

describe("top-up", () => {
  it("reads a group's ready units through units_ready, never past the units dispatched since the statistics were taken", async () => {
    await sql`INSERT INTO units (kind, group_name, priority, payload, status, max_attempts)
              SELECT 'simulate', 'g-' || (i % 2), 0, '{}', 'pending', 3 FROM generate_series(1, 20000) AS i`.execute(h.db);
    await compactTallies(h.db);
    // As autovacuum does after a big enqueue: the statistics see 20,000 pending units ...
    await sql`ANALYZE units`.execute(h.db);
    // ... and 18,000 of them are dispatched before they are taken again.
    expect((await claimTopUp(h.db, 18_000)).units).toHaveLength(18_000);
    const plans = (await explainDispatch(h.db, 50)).join("\n");
    // The preview's units and the top-up's claim, with the generic plans the services run.
    for (const part of [plans.slice(plans.indexOf("2. the units"), plans.indexOf("top-up of")), plans.slice(plans.indexOf("2. the claim"))]) {
      expect(part).toContain("units_ready");
      // Walking the primary key from the first id, each group's probe filtered out the 9,000
      // units of that group dispatched since.
      const removed = [...part.matchAll(/Rows Removed by Filter: (\d+)/g)].map((m) => Number(m[1]));
      expect(Math.max(0, ...removed)).toBeLessThan(100);
    }
  });

  it("fills the outbox up to the maximum and no further", async () => {
    await addUnits(Array.from({ length: 10 }, () => ({})));
    expect((await claimTopUp(h.db, 4)).units).toHaveLength(4);
    expect((await claimTopUp(h.db, 4)).units).toHaveLength(0);
    expect(await outstanding()).toBe(4);
  });

  it("never over-dispatches when many top-ups race", async () => {
    await addUnits(Array.from({ length: 50 }, () => ({})));
    const claims = await Promise.all(Array.from({ length: 12 }, () => claimTopUp(h.db, 7)));
    expect(claims.reduce((n, c) => n + c.units.length, 0)).toBe(7);
    expect(await outstanding()).toBe(7);
  });

  it("starts a new attempt and records a dispatched event per unit", async () => {
    const [id] = await addUnits([{}]);
    const claim = await claimTopUp(h.db, 5);
    expect(claim.units).toEqual([{ unitId: id, attempt: 1, kind: "simulate", payload: {} }]);
    const events = await h.db.selectFrom("unit_events").selectAll().where("unit_id", "=", id!).execute();
    expect(events.map((e) => [e.status, e.attempt, e.source])).toEqual([["dispatched", 1, "api"]]);
  });

  it("dispatches nothing while dispatching is off", async () => {
    await addUnits([{}, {}]);
    await setDispatching(h.db, false);
    expect(await claimTopUp(h.db, 5)).toMatchObject({ dispatching: false, units: [] });
  });

  it("keeps the ready counts itself: no deltas left to fold, the counts exact", async () => {
    await addUnits([{ group: "a" }, { group: "a" }, { group: "b", priority: 1 }, { group: "c", notBefore: new Date(Date.now() - 1_000) }]);
    await compactTallies(h.db);
    expect((await claimTopUp(h.db, 3)).units).toHaveLength(3);
    expect((await sql<{ n: number }>`SELECT count(*)::int AS n FROM ready_deltas`.execute(h.db)).rows[0]!.n).toBe(0);
    expect(await checkTallies(h.db)).toEqual([]);
    // Other writers still append deltas, and the next top-up reads them.
    await addUnits([{ group: "d", priority: 2 }]);
    expect((await sql<{ n: number }>`SELECT count(*)::int AS n FROM ready_deltas`.execute(h.db)).rows[0]!.n).toBe(1);
    expect((await claimTopUp(h.db, 4)).units).toHaveLength(1);
    expect(await checkTallies(h.db)).toEqual([]);
  });

  it("runs its statements prepared, once per connection", async () => {
    await addUnits([{ group: "a" }, { group: "b" }]);
    const s = inject("rtbServers");
    const one = createDb(
      { RTB_DB_HOST: { host: s.db.host, port: s.db.port }, RTB_DB_USER: s.db.user, RTB_DB_PASSWORD: s.db.password, RTB_DB_NAME: place.dbName, RTB_DB_POOL_SIZE: 1, RTB_DB_PREPARED_STATEMENTS: true },
      testLogger("db"),
    );
    try {
      for (let i = 0; i < 2; i++) expect(await nextInLine(one.db, 1)).toHaveLength(1);
      expect((await claimTopUp(one.db, 2)).units).toHaveLength(2);
      const { rows } = await sql<{ name: string }>`SELECT name FROM pg_prepared_statements ORDER BY name`.execute(one.db);
      expect(rows.map((r) => r.name)).toEqual(["rtb_claim", "rtb_next_units", "rtb_preview_inputs", "rtb_top_up_inputs"]);
    } finally {
      await one.close();
    }
  });

  it("sends them unnamed with RTB_DB_PREPARED_STATEMENTS=false (for PgBouncer in transaction mode), leaving nothing prepared", async () => {
    await addUnits([{ group: "a" }, { group: "b" }]);
    const one = openTestDb(place, { RTB_DB_POOL_SIZE: 1, RTB_DB_PREPARED_STATEMENTS: false });
    try {
      for (let i = 0; i < 2; i++) expect(await nextInLine(one.db, 1)).toHaveLength(1);
      expect((await claimTopUp(one.db, 2)).units).toHaveLength(2);
      const { rows } = await sql<{ name: string }>`SELECT name FROM pg_prepared_statements`.execute(one.db);
      expect(rows).toEqual([]);
    } finally {
      await one.close();
    }
  });

  it("claims all or nothing, and leaves its connection out of any transaction when it fails", async () => {
    await addUnits([{ group: "a" }, { group: "b" }]);
    await compactTallies(h.db);
    const s = inject("rtbServers");
    const one = createDb(
      { RTB_DB_HOST: { host: s.db.host, port: s.db.port }, RTB_DB_USER: s.db.user, RTB_DB_PASSWORD: s.db.password, RTB_DB_NAME: place.dbName, RTB_DB_POOL_SIZE: 1, RTB_DB_PREPARED_STATEMENTS: true },
      testLogger("db"),
    );
    // The events are written by the same statement as the claim: make them fail.
    await sql`ALTER TABLE unit_events ADD CONSTRAINT no_api_events CHECK (source <> 'api')`.execute(h.db);
    try {
      await expect(claimTopUp(one.db, 2)).rejects.toThrow(/no_api_events/);
      const { rows } = await sql<{ open: boolean }>`SELECT now() <> statement_timestamp() AS open`.execute(one.db);
      expect(rows).toEqual([{ open: false }]);
    } finally {
      await sql`ALTER TABLE unit_events DROP CONSTRAINT no_api_events`.execute(h.db);
      await one.close();
    }
    expect(await outstanding()).toBe(0);
    expect(await checkTallies(h.db)).toEqual([]);
    expect((await claimTopUp(h.db, 2)).units).toHaveLength(2);
    expect(await checkTallies(h.db)).toEqual([]);
  });

  it("takes exactly what GET /next previewed, in the same order", async () => {
    await addUnits([{ group: "a" }, { group: "a" }, { group: "b", priority: 1 }, { group: "c" }, { group: "a" }, { group: "b" }]);
    const preview = (await nextInLine(h.db, 4)).map((u) => u.id);
    const claim = await claimTopUp(h.db, 4);
    expect(claim.units.map((u) => u.unitId)).toEqual(preview);
  });
});

describe("dispatch order", () => {
  it("puts higher priority first, then round-robins groups, FIFO within a group", async () => {
    const ids = await addUnits([
      { group: "big" }, { group: "big" }, { group: "big" }, { group: "big" },
      { group: "small" },
      { group: "urgent", priority: 5 },
      { group: "small" },
    ]);
    const [b1, b2, b3, b4, s1, u1, s2] = ids;
    expect((await nextInLine(h.db, 10)).map((u) => u.id)).toEqual([u1, b1, s1, b2, s2, b3, b4]);
  });

  it("remembers whom it served: one-unit top-ups alternate between groups", async () => {
    await addUnits([...Array.from({ length: 6 }, () => ({ group: "big" })), { group: "small" }, { group: "small" }]);
    const served: string[] = [];
    for (let i = 0; i < 4; i++) {
      const [unit] = (await claimTopUp(h.db, 1)).units;
      const row = await h.db.selectFrom("units").select("group_name").where("id", "=", unit!.unitId).executeTakeFirstOrThrow();
      served.push(row.group_name);
      // The unit finishes, which frees room for exactly one more.
      await h.db.updateTable("units").set({ status: "success" }).where("id", "=", unit!.unitId).execute();
    }
    expect(served).toEqual(["big", "small", "big", "small"]);
  });

  it("counts a group as served at its last unit in a top-up", async () => {
    await addUnits([...Array.from({ length: 4 }, () => ({ group: "a" })), ...Array.from({ length: 4 }, () => ({ group: "b" }))]);
    const groupsOf = async (ids: number[]) =>
      (await h.db.selectFrom("units").select(["id", "group_name"]).where("id", "in", ids).execute()).sort((x, y) => ids.indexOf(x.id) - ids.indexOf(y.id)).map((r) => r.group_name);
    const first = (await claimTopUp(h.db, 3)).units.map((u) => u.unitId);
    // Equal scores, never served: by name; then b catches up; then a, served before b in this top-up.
    expect(await groupsOf(first)).toEqual(["a", "b", "a"]);
    await h.db.updateTable("units").set({ status: "success" }).where("id", "in", first).execute();
    // Nothing in flight again: the tie goes to b, whose last unit went out before a's.
    const [next] = (await claimTopUp(h.db, 1)).units;
    expect(await groupsOf([next!.unitId])).toEqual(["b"]);
  });

  it("skips units whose retry backoff has not ended, and says when the next one ends", async () => {
    const later = new Date(Date.now() + 60_000);
    const [, ready] = await addUnits([{ notBefore: later }, { notBefore: new Date(Date.now() - 1_000) }]);
    expect((await nextInLine(h.db, 10)).map((u) => u.id)).toEqual([ready]);
    expect((await claimTopUp(h.db, 10)).units.map((u) => u.unitId)).toEqual([ready]);
    expect((await nextRetryAt(h.db))?.getTime()).toBe(later.getTime());
  });
});
