import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { sql } from "kysely";
import pg from "pg";
import { sampleOutstanding } from "@rtb/api";
import { asDuty, claimTopUp, createDb, migrateToLatest, nextInLine, setDispatching, type DbHandle } from "@rtb/db";
import { OUTSTANDING } from "@rtb/protocol";
import { DEFAULT_POOL_SIZE, expectRunSettled, openTestDb, seedFlowEnv, startPgBouncer, startSystem, testLogger, testServers, useTestPlace, waitFor, type PgBouncer } from "@rtb/testing";

/**
 * rtb through PgBouncer in transaction pooling mode (test/support/pgbouncer.ts: pool_mode =
 * transaction, a few server connections per database): with RTB_DB_PREPARED_STATEMENTS=false
 * the seed flow runs as it does direct; left on, the dispatch statements fail, because each
 * transaction may run on another server connection. Each test has a database of its own, so
 * PgBouncer's pool for it starts empty.
 */
const place = useTestPlace({ perTest: true, kinds: ["nobody"] });
let bouncer: PgBouncer;
let h: DbHandle;

beforeAll(async () => {
  bouncer = await startPgBouncer();
}, 60_000);
afterAll(async () => {
  await bouncer?.stop();
});
beforeEach(() => {
  h = place.own(openTestDb(place));
});

/** A handle on the test's database through the PgBouncer. */
const throughBouncer = (config: { RTB_DB_POOL_SIZE?: number; RTB_DB_PREPARED_STATEMENTS: boolean }) =>
  place.own(openTestDb(place, { RTB_DB_HOST: { host: bouncer.host, port: bouncer.port }, RTB_DB_POOL_SIZE: 1, ...config }));

async function addUnits(n: number, group = "g"): Promise<void> {
  await sql`INSERT INTO units (kind, group_name, priority, payload, status, max_attempts)
            SELECT 'simulate', ${group}, 0, '{}', 'pending', 3 FROM generate_series(1, ${n})`.execute(h.db);
}

const outstanding = async () =>
  (await h.db.selectFrom("units").select((eb) => eb.fn.countAll<number>().as("n")).where("status", "in", OUTSTANDING).executeTakeFirstOrThrow()).n;

describe("through PgBouncer in transaction mode", () => {
  it("takes the seed flow to a terminal status with RTB_DB_PREPARED_STATEMENTS=false, and keeps every rule", async () => {
    const env = {
      RTB_DB_HOST: `${bouncer.host}:${bouncer.port}`,
      RTB_DB_PREPARED_STATEMENTS: "false",
      // More clients than PgBouncer has server connections: transactions move between them.
      RTB_DB_POOL_SIZE: String(DEFAULT_POOL_SIZE * 3),
      ...seedFlowEnv,
    };
    // The api migrates, seeds, dispatches and applies reports through PgBouncer; the sampler
    // and the checker read through it too.
    const system = place.own(await startSystem(place, env));
    const via = throughBouncer({ RTB_DB_POOL_SIZE: 2, RTB_DB_PREPARED_STATEMENTS: false });
    expect((await system.get("/")).counts.pending).toBe(100);
    const s = place.own(sampleOutstanding(via.db, 5));
    expect(await system.get("/go")).toMatchObject({ dispatching: true, changed: true });
    const final = await waitFor("every unit to finish", async () => {
      const state = await system.get("/");
      return state.done ? state : null;
    }, 60_000);
    await expectRunSettled({ db: via.db, broker: system.api.broker, env: { ...place.env, ...env }, sampler: s, total: 100 });
    const attempts = await h.db.selectFrom("units").select((eb) => eb.fn.sum<number>("attempt").as("n")).executeTakeFirstOrThrow();
    expect(final.publishes).toEqual({ dispatched: Number(attempts.n), republished: 0, unconfirmed: 0, refused: 0 });
    expect(final.counts.success + final.counts.error).toBe(100);
    expect(s.peak).toBe(10);
    // PostgreSQL saw PgBouncer's few server connections, not the api's pool: nothing but
    // this test's direct handle and those reached the database.
    const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database()`.execute(h.db);
    expect(rows[0]!.n).toBeLessThanOrEqual(DEFAULT_POOL_SIZE + 5);
  });

  it("holds the top-up's and the duties' transaction-scoped advisory locks across clients", async () => {
    await addUnits(200);
    await setDispatching(h.db, true);
    // Eight clients, each with a connection of its own to PgBouncer, top up at once: the lock
    // serialises them, so together they dispatch exactly the maximum.
    const clients = Array.from({ length: 8 }, () => throughBouncer({ RTB_DB_PREPARED_STATEMENTS: false }));
    const claims = await Promise.all(clients.flatMap((c) => [claimTopUp(c.db, 50), claimTopUp(c.db, 50)]));
    expect(claims.reduce((n, c) => n + c.units.length, 0)).toBe(50);
    expect(await outstanding()).toBe(50);
    // A duty held by one client is skipped by another (pg_try_advisory_xact_lock), then free.
    const [a, b] = clients;
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const inside = new Promise<void>((r) => (entered = r));
    const first = asDuty(a!.db, "retention", async () => {
      entered();
      await held;
      return "a";
    });
    await inside;
    expect(await asDuty(b!.db, "retention", async () => "b")).toEqual({ ran: false });
    release();
    expect(await first).toEqual({ ran: true, value: "a" });
    expect(await asDuty(b!.db, "retention", async () => "b")).toEqual({ ran: true, value: "b" });
    // No lock outlives its transaction on PgBouncer's server connections.
    const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`.execute(h.db);
    expect(rows[0]!.n).toBe(0);
  });

  it("migrates a new database from several replicas at once, leaving no advisory lock behind", async () => {
    const s = testServers();
    const name = `rtb_${s.runId}_pgb_migrate_${process.pid}`;
    const admin = new pg.Client({ ...s.db, database: "postgres" });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${name}`);
    const replicas: DbHandle[] = [];
    try {
      for (let i = 0; i < 4; i++) {
        replicas.push(
          createDb({ RTB_DB_HOST: { host: bouncer.host, port: bouncer.port }, RTB_DB_USER: s.db.user, RTB_DB_PASSWORD: s.db.password, RTB_DB_NAME: name, RTB_DB_POOL_SIZE: 2, RTB_DB_PREPARED_STATEMENTS: false }, testLogger("db")),
        );
      }
      const applied = await Promise.all(replicas.map((r) => migrateToLatest(r.db)));
      // Each migration ran once, by one of them; the others found the schema up to date.
      const names = applied.flatMap((results) => results.map((r) => r.migrationName));
      expect(names.length).toBeGreaterThan(0);
      expect(new Set(names).size).toBe(names.length);
      expect(await Promise.all(replicas.map((r) => migrateToLatest(r.db)))).toEqual(replicas.map(() => []));
      const { rows } = await admin.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = $1)",
        [name],
      );
      expect(rows[0]!.n).toBe(0);
    } finally {
      await Promise.all(replicas.map((r) => r.close()));
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end();
    }
  });

  describe("with prepared statements left on (the trap)", () => {
    beforeEach(async () => {
      await addUnits(5);
    });

    it("fails when a client's transaction meets a server connection another client prepared the statement on", async () => {
      const [a, b] = [throughBouncer({ RTB_DB_PREPARED_STATEMENTS: true }), throughBouncer({ RTB_DB_PREPARED_STATEMENTS: true })];
      // a prepares the preview's statement on PgBouncer's one server connection for this
      // database; b, idle PgBouncer gives it the same one, prepares it again.
      expect(await nextInLine(a.db, 1)).toHaveLength(1);
      await expect(nextInLine(b.db, 1)).rejects.toThrow('prepared statement "rtb_preview_inputs" already exists');
    });

    it("fails when a client's statement, prepared on one server connection, runs on another", async () => {
      const [a, b] = [throughBouncer({ RTB_DB_PREPARED_STATEMENTS: true }), throughBouncer({ RTB_DB_PREPARED_STATEMENTS: true })];
      expect(await nextInLine(a.db, 1)).toHaveLength(1);
      // b holds that server connection in a transaction: a's next statement runs on another,
      // where pg, which prepared it once for this client connection, only binds it.
      await b.db.connection().execute(async (conn) => {
        await sql`BEGIN`.execute(conn);
        await expect(nextInLine(a.db, 1)).rejects.toThrow('prepared statement "rtb_preview_inputs" does not exist');
        await sql`ROLLBACK`.execute(conn);
      });
    });

    it("works the same sequences with RTB_DB_PREPARED_STATEMENTS=false", async () => {
      const [a, b] = [throughBouncer({ RTB_DB_PREPARED_STATEMENTS: false }), throughBouncer({ RTB_DB_PREPARED_STATEMENTS: false })];
      const expected = await nextInLine(h.db, 1);
      expect(await nextInLine(a.db, 1)).toEqual(expected);
      expect(await nextInLine(b.db, 1)).toEqual(expected);
      await b.db.connection().execute(async (conn) => {
        await sql`BEGIN`.execute(conn);
        expect(await nextInLine(a.db, 1)).toEqual(expected);
        await sql`ROLLBACK`.execute(conn);
      });
      await setDispatching(h.db, true);
      expect((await claimTopUp(a.db, 2)).units).toHaveLength(2);
      expect((await claimTopUp(b.db, 5)).units).toHaveLength(3);
    });
  });
});
