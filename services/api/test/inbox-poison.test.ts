import type { ChannelModel } from "amqplib";
import { sql } from "kysely";
import { beforeAll, expect, it } from "vitest";
import type { ApiService } from "@rtb/api";
import type { DbHandle } from "@rtb/db";
import { openTestDb, queueDepth, rawBroker, useTestPlace, waitFor } from "@rtb/testing";
import { call, getUnit, publishRaw, startApi, statusMessage } from "./support.ts";

// Only a database outage may hold the inbox. A well-formed report the api fails on in any
// other way (it cannot encode the result, PostgreSQL raises an error that is not an outage)
// is dead-lettered on its own, counted and logged, and the reports after it are applied.
const place = useTestPlace();
let api: ApiService;
let conn: ChannelModel;
let db: DbHandle;

beforeAll(async () => {
  // A short shutdown deadline: if the inbox is stuck retrying, afterAll still ends quickly.
  api = place.own(await startApi(place, { RTB_SHUTDOWN_TIMEOUT_MS: "1000", RTB_INBOX_BATCH_MS: "200" }));
  conn = place.own(await rawBroker());
  db = place.own(openTestDb(place));
  await call(api, "/go");
  // Stand-ins for failures inside the database, raised by a trigger on what a report writes:
  // "refused" always (an error that is no outage), "flaky" once (a serialization failure,
  // which must be retried, not dead-lettered). A sequence, because it is not rolled back.
  await sql`CREATE SEQUENCE flaky_seen`.execute(db.db);
  await sql`
    CREATE FUNCTION refuse_some() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.result = '"kill"'::jsonb THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF;
      IF NEW.result = '"full"'::jsonb THEN RAISE EXCEPTION 'disk full (test)' USING ERRCODE = '53100'; END IF;
      IF NEW.result = '"refused"'::jsonb THEN RAISE EXCEPTION 'refused by a test trigger' USING ERRCODE = 'P0001'; END IF;
      IF NEW.result = '"flaky"'::jsonb AND nextval('flaky_seen') = 1 THEN
        RAISE EXCEPTION 'could not serialize (test)' USING ERRCODE = '40001';
      END IF;
      RETURN NEW;
    END $$`.execute(db.db);
  await sql`CREATE TRIGGER refuse_some BEFORE UPDATE ON units FOR EACH ROW EXECUTE FUNCTION refuse_some()`.execute(db.db);
});

const send = (...bodies: (object | string)[]) => publishRaw(conn, place.topology.inbox, ...bodies);
const deadLetters = async () => (await call(api, "/")).body.deadLetters.rejectedByThisApi as Record<string, number>;

it("a success whose result the api cannot encode is dead-lettered alone; the reports after it are applied", async () => {
  // Valid JSON that JSON.parse reads but JSON.stringify cannot write back (too deep for its stack).
  const depth = 20_000;
  const deep = JSON.stringify(statusMessage([{ unitId: 1, attempt: 1, status: "success", result: "DEEP" }])).replace('"DEEP"', "[".repeat(depth) + "]".repeat(depth));
  await send(deep, statusMessage([{ unitId: 2, attempt: 1, status: "success", result: "fine" }]));

  await waitFor("the report after it to be applied", async () => (await getUnit(api, 2)).status === "success", 15_000);
  await waitFor("the culprit to be dead-lettered and counted", async () => {
    const n = Object.values(await deadLetters()).reduce((a, b) => a + b, 0);
    return n === 1 && (await queueDepth(conn, place.topology.dead)) === 1;
  }, 15_000);
  expect(await deadLetters()).toEqual({ unapplicable_status_message: 1 });
  expect((await getUnit(api, 1)).status).toBe("dispatched");
});

it("an error PostgreSQL raises that is not an outage dead-letters that message only, and later batches flow", async () => {
  await send(
    statusMessage([{ unitId: 3, attempt: 1, status: "success", result: "refused" }]),
    statusMessage([{ unitId: 4, attempt: 1, status: "success", result: "fine" }]),
  );
  await waitFor("the other report of the batch to be applied", async () => (await getUnit(api, 4)).status === "success", 15_000);
  await waitFor("the refused one to be counted", async () => (await deadLetters()).unapplicable_status_message === 2, 15_000);
  expect((await getUnit(api, 3)).status).toBe("dispatched");

  // And the inbox is not held afterwards: a later message is applied.
  await send(statusMessage([{ unitId: 5, attempt: 1, status: "queued" }], { service: "leader", id: "L" }));
  await waitFor("a later report to be applied", async () => (await getUnit(api, 5)).status === "queued", 15_000);
});

it("a report that kills the database session every time, while the server answers, is isolated too", async () => {
  await send(
    statusMessage([{ unitId: 8, attempt: 1, status: "success", result: "kill" }]),
    statusMessage([{ unitId: 9, attempt: 1, status: "success", result: "fine" }]),
  );
  await waitFor("the other report to be applied", async () => (await getUnit(api, 9)).status === "success", 20_000);
  await waitFor("the killer to be dead-lettered", async () => (await deadLetters()).unapplicable_status_message === 3, 20_000);
  expect((await getUnit(api, 8)).status).toBe("dispatched");
});

it("a serialization failure is retried, not dead-lettered", async () => {
  const before = await deadLetters();
  await send(statusMessage([{ unitId: 6, attempt: 1, status: "success", result: "flaky" }]));
  await waitFor("the report to be applied on the retry", async () => (await getUnit(api, 6)).status === "success", 15_000);
  expect(await deadLetters()).toEqual(before);
  const { rows } = await sql<{ n: string }>`SELECT last_value AS n FROM flaky_seen`.execute(db.db);
  expect(Number(rows[0]!.n)).toBeGreaterThanOrEqual(2);
});

it("an outage PostgreSQL answers pings through (disk full) holds the inbox, and /readyz says so until it passes", async () => {
  await send(statusMessage([{ unitId: 7, attempt: 1, status: "success", result: "full" }]));
  const held = await waitFor("/readyz to say the inbox is held", async () => {
    const r = await call(api, "/readyz");
    return r.status === 503 ? r.body : null;
  }, 15_000);
  expect(held).toEqual({ ready: false, database: true, broker: true, inbox: false });
  expect((await getUnit(api, 7)).status).toBe("dispatched");
  // The outage ends: the held report is applied, not dead-lettered, and the api is ready again.
  const before = await deadLetters();
  await sql`CREATE OR REPLACE FUNCTION refuse_some() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$`.execute(db.db);
  await waitFor("the held report to be applied", async () => (await getUnit(api, 7)).status === "success", 15_000);
  expect((await call(api, "/readyz")).status).toBe(200);
  expect(await deadLetters()).toEqual(before);
});
