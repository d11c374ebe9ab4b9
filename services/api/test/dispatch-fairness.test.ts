import type { ChannelModel } from "amqplib";
import { beforeAll, expect, it } from "vitest";
import type { ApiService } from "@rtb/api";
import type { DbHandle } from "@rtb/db";
import { openTestDb, rawBroker, useTestPlace, waitFor } from "@rtb/testing";
import { call, publishRaw, startApi, statusMessage } from "./support.ts";

// The dispatch order (docs/architecture.md, Dispatch) is priority first, then fair share across
// groups (round-robin, so one large group cannot starve the others), then FIFO. In the steady state the outbox
// is full and each finished unit frees room for one: every top-up takes a single unit. This
// file checks that those one-unit top-ups still take turns across groups.
const place = useTestPlace();
let api: ApiService;
let db: DbHandle;
let conn: ChannelModel;

beforeAll(async () => {
  db = place.own(openTestDb(place));
  // A large group enqueued first, then a small one (the backlog is not empty, so no seed).
  const unit = (group_name: string) => ({ kind: "simulate", group_name, priority: 0, max_attempts: 3, status: "pending" as const });
  await db.db.insertInto("units").values([...Array.from({ length: 6 }, () => unit("big")), unit("small"), unit("small")]).execute();
  api = place.own(await startApi(place, { RTB_BROADCAST_MAX_QUEUE: "1" }));
  conn = place.own(await rawBroker());
});

const inFlight = async () => (await db.db.selectFrom("units").select(["id", "group_name"]).where("status", "=", "dispatched").execute())[0];

it("one-unit top-ups take turns across groups: a large group enqueued first does not starve a small one", async () => {
  await call(api, "/go");
  const order: string[] = [];
  for (let i = 0; i < 4; i++) {
    const unit = await waitFor(`dispatch #${i + 1}`, inFlight);
    order.push(unit.group_name);
    // The unit finishes: that frees room for exactly one more.
    await publishRaw(conn, place.topology.inbox, statusMessage([{ unitId: unit.id, attempt: 1, status: "success" }]));
    await waitFor(`unit ${unit.id} to be done`, async () => (await call(api, `/units/${unit.id}`)).body.status === "success");
  }
  // Round-robin over two groups: in any 4 consecutive dispatches, each group gets 2.
  expect([...order].sort()).toEqual(["big", "big", "small", "small"]);
});
