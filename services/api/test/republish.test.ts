import type { ChannelModel } from "amqplib";
import { sql } from "kysely";
import { beforeAll, expect, it } from "vitest";
import { checkSystem, type ApiService } from "@rtb/api";
import type { DbHandle } from "@rtb/db";
import { openTestDb, rawBroker, useTestPlace, waitFor } from "@rtb/testing";
import { call, eventStatuses, getUnit, startApi } from "./support.ts";

// A unit whose dispatch messages come to nothing on every try (here: the outbox is purged, as
// a leader refusing them would leave it) used to be re-published by the reconciler forever,
// while `npm run check` said ok. Each re-publish is now counted against the attempt: the
// checker reports a unit re-published twice without progress, and the reconciler ends the
// attempt after the third. The cron never fires (support.ts): the test calls tick().
const place = useTestPlace();
let api: ApiService;
let conn: ChannelModel;
let db: DbHandle;
const DISPATCH_TIMEOUT_MS = 300;

beforeAll(async () => {
  api = place.own(await startApi(place, {
    RTB_BROADCAST_MAX_QUEUE: "1",
    RTB_DISPATCH_TIMEOUT_MS: String(DISPATCH_TIMEOUT_MS),
    RTB_RETRY_BACKOFF_MS: "600000",
    RTB_RETRY_BACKOFF_MAX_MS: "600000",
  }));
  conn = place.own(await rawBroker());
  db = place.own(openTestDb(place));
  expect((await call(api, "/go")).body.dispatchedNow).toBe(1);
});

/** The message is lost on its way, then the dispatch timeout passes, then a reconciler pass. */
async function refuseAndTick() {
  const ch = await conn.createChannel();
  await ch.purgeQueue(place.topology.box);
  await ch.close();
  await waitFor("the dispatch timeout to pass", async () => {
    const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM units WHERE status = 'dispatched' AND dispatched_at < now() - make_interval(secs => ${DISPATCH_TIMEOUT_MS / 1000})`.execute(db.db);
    return rows[0]!.n === 1;
  });
  await api.reconciler.tick();
}

const check = () => checkSystem({ db: db.db, broker: api.broker, maxQueue: 1, dispatchTimeoutMs: DISPATCH_TIMEOUT_MS, processingTimeoutMs: 300_000, graceMs: 60_000 });

it("counts re-publishes per attempt, the checker reports a unit re-published twice, and the reconciler ends it after three", async () => {
  await refuseAndTick();
  expect((await getUnit(api, 1)).republishes).toBe(1);
  expect((await check()).violations).toEqual([]);

  await refuseAndTick();
  expect((await getUnit(api, 1)).republishes).toBe(2);
  const report = await check();
  expect(report.violations).toEqual([expect.objectContaining({ rule: "republished_without_progress", units: [1], count: 1 })]);

  await refuseAndTick();
  expect((await getUnit(api, 1)).republishes).toBe(3);
  await refuseAndTick();
  // The fourth pass does not re-publish: the attempt ends as a retryable error that says why.
  const unit = await getUnit(api, 1);
  expect(unit).toMatchObject({ status: "pending", attempt: 1, republishes: 3 });
  expect(eventStatuses(unit)).toEqual(["dispatched", "error"]);
  expect(unit.events[1]).toMatchObject({ source: "reconciler", detail: { retryable: true, message: expect.stringContaining("re-published 3 times") } });
  expect((await check()).violations).toEqual([]);
});
