import pg from "pg";
import { afterEach, beforeEach, describe, expect, inject, it } from "vitest";
import { openTestDb, useTestPlace } from "@rtb/testing";
import type { DbHandle } from "@rtb/db";
import { rtb, rtbJson } from "./support.ts";

/** migrate and seed talk to PostgreSQL directly (RTB_DB_*), with no api running. */
const servers = () => inject("rtbServers");
const place = useTestPlace({ perTest: true });
let h: DbHandle;
const dropped: string[] = [];

beforeEach(() => {
  h = place.own(openTestDb(place));
});
afterEach(async () => {
  const admin = new pg.Client({ ...servers().db, database: "postgres" });
  await admin.connect();
  for (const name of dropped.splice(0)) await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.end();
});

const dbEnv = (name = place.dbName) => ({ ...place.env, RTB_DB_NAME: name });

describe("rtb migrate", () => {
  it("creates a missing database, applies every migration, and then has nothing to do", async () => {
    // Named under the run's id, so the global teardown drops it even if this test dies.
    const name = `rtb_${servers().runId}_cli_migrate_${process.pid}`;
    dropped.push(name);
    const first = await rtbJson(["migrate"], dbEnv(name));
    expect(first.database).toMatch(new RegExp(`/${name}$`));
    expect(first.applied[0]).toBe("0001_initial");
    expect(first.applied.length).toBeGreaterThanOrEqual(2);

    const again = await rtb(["migrate"], dbEnv(name));
    expect(again).toMatchObject({ code: 0, stdout: expect.stringMatching(new RegExp(`^\\S+/${name} is up to date: no migration to apply\\n$`)) });
    // The database the api would use is there, with the tables.
    const admin = new pg.Client({ ...servers().db, database: name });
    await admin.connect();
    const { rows } = await admin.query("SELECT count(*)::int AS n FROM units");
    await admin.end();
    expect(rows[0].n).toBe(0);
  });

  it("says which variable is wrong (exit 2), and which server it cannot reach (exit 1)", async () => {
    expect(await rtb(["migrate"], { ...dbEnv(), RTB_DB_HOST: "nowhere:notaport" })).toMatchObject({ code: 2, stderr: expect.stringContaining('RTB_DB_HOST="nowhere:notaport"') });
    const unreachable = await rtb(["migrate"], { ...dbEnv(), RTB_DB_HOST: "127.0.0.1:1", RTB_CONNECT_TIMEOUT_MS: "0" });
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toContain("rtb migrate: cannot reach PostgreSQL at 127.0.0.1:1/");
    expect(unreachable.stderr).toContain("RTB_DB_HOST");
  });
});

describe("rtb seed", () => {
  const total = async () => Number((await h.db.selectFrom("units").select((eb) => eb.fn.countAll().as("n")).executeTakeFirstOrThrow()).n);

  it("adds N units whatever the backlog holds, spread over the groups, with the options given", async () => {
    expect(await total()).toBe(0);
    const r = await rtb(["seed", "1000"], dbEnv());
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^seeded 1,000 units into \S+ \(ids 1 to 1000\): kind simulate, 5 groups, priority 0, in /);
    expect(await total()).toBe(1000);

    const more = await rtbJson(["seed", "30", "--kind", "render.v2", "--groups", "3", "--priority", "7", "--max-attempts", "5"], dbEnv());
    expect(more).toEqual({ created: 30, firstId: 1001, lastId: 1030 });
    expect(await total()).toBe(1030);
    const groups = await h.db
      .selectFrom("units")
      .select(["group_name", (eb) => eb.fn.countAll<number>().as("n")])
      .where("kind", "=", "render.v2")
      .where("priority", "=", 7)
      .where("max_attempts", "=", 5)
      .where("status", "=", "pending")
      .groupBy("group_name")
      .orderBy("group_name")
      .execute();
    expect(groups.map((g) => [g.group_name, Number(g.n)])).toEqual([
      ["customer-1", 10],
      ["customer-2", 10],
      ["customer-3", 10],
    ]);
    const first = await h.db.selectFrom("units").select("payload").where("id", "=", 1001).executeTakeFirstOrThrow();
    expect(first.payload).toEqual({ n: 1 });
  });

  it("refuses a bad count or kind before touching the database (exit 2)", async () => {
    expect(await rtb(["seed"], dbEnv())).toMatchObject({ code: 2, stderr: expect.stringContaining("usage: rtb seed <N>") });
    expect(await rtb(["seed", "0"], dbEnv())).toMatchObject({ code: 2, stderr: expect.stringContaining("<N>: expected an integer from 1 to 10000000") });
    expect(await rtb(["seed", "5", "--kind", "no spaces"], dbEnv())).toMatchObject({ code: 2, stderr: expect.stringContaining("--kind") });
    expect(await total()).toBe(0);
  });
});
