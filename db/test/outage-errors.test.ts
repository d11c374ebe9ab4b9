import { sql } from "kysely";
import pg from "pg";
import { beforeAll, expect, it } from "vitest";
import { isOutageError, type DbHandle } from "@rtb/db";
import { openTestDb, useTestPlace } from "@rtb/testing";

// The inbox holds a batch only on isOutageError and dead-letters on anything else, so the
// errors a real outage raises must be classified as one (and a refusal must not). Checked
// against the real server, without stopping it: a session terminated by an administrator,
// a port nobody listens on, and a statement that can never succeed.
const place = useTestPlace();
let db: DbHandle;

beforeAll(() => {
  db = place.own(openTestDb(place));
});

const failure = (p: Promise<unknown>) => p.then(() => null, (err: unknown) => err);

it("a session terminated by the server is an outage", async () => {
  const [host, port] = place.env.RTB_DB_HOST!.split(":");
  const client = new pg.Client({ host, port: Number(port), user: place.env.RTB_DB_USER, password: place.env.RTB_DB_PASSWORD, database: place.dbName });
  client.on("error", () => {});
  await client.connect();
  const pid = (await client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
  const pending = failure(client.query("SELECT pg_sleep(5)"));
  await new Promise((r) => setTimeout(r, 100));
  await sql`SELECT pg_terminate_backend(${pid})`.execute(db.db);
  const err = await pending;
  expect(err).not.toBeNull();
  expect(isOutageError(err)).toBe(true);
  await client.end().catch(() => {});
});

it("a server that does not answer is an outage", async () => {
  const client = new pg.Client({ host: "127.0.0.1", port: 1, user: "nobody", connectionTimeoutMillis: 2_000 });
  const err = await failure(client.connect());
  expect(isOutageError(err)).toBe(true);
});

it("a statement refused for its values, or an error raised by a function, is not", async () => {
  const nul = await failure(sql`SELECT ${"a\u0000b"}::text`.execute(db.db));
  expect(isOutageError(nul)).toBe(false);
  expect(isOutageError(await failure(sql`SELECT 1 / 0`.execute(db.db)))).toBe(false);
  expect(isOutageError(await failure(sql`DO $$ BEGIN RAISE EXCEPTION 'no' USING ERRCODE = 'P0001'; END $$`.execute(db.db)))).toBe(false);
  expect(isOutageError(new RangeError("Maximum call stack size exceeded"))).toBe(false);
});
