import type { ChannelModel } from "amqplib";
import { beforeAll, expect, it } from "vitest";
import type { ApiService } from "@rtb/api";
import { queueDepth, rawBroker, useTestPlace, waitFor } from "@rtb/testing";
import { call, getUnit, publishRaw, startApi, statusMessage } from "./support.ts";

// A report can pass the message schema and still be refused by PostgreSQL: a NUL character
// (\u0000) is valid JSON and a valid zod string, but jsonb and text columns reject it. Such a
// report must not stop the inbox (docs/architecture.md, api inbox consumer): it is dead-lettered
// and counted, never crashes a consumer, and no unit is lost.
const place = useTestPlace();
let api: ApiService;
let conn: ChannelModel;

beforeAll(async () => {
  // A short shutdown deadline: if the inbox is stuck retrying, afterAll still ends quickly.
  api = place.own(await startApi(place, { RTB_SHUTDOWN_TIMEOUT_MS: "1000" }));
  conn = place.own(await rawBroker());
  await call(api, "/go");
});

it("a report PostgreSQL cannot store (a NUL in the result) does not block the reports published after it", async () => {
  await publishRaw(conn, place.topology.inbox, statusMessage([{ unitId: 1, attempt: 1, status: "success", result: "a\u0000b" }]));
  await publishRaw(conn, place.topology.inbox, statusMessage([{ unitId: 2, attempt: 1, status: "success", result: "fine" }]));

  await waitFor("the valid report after it to be applied", async () => (await getUnit(api, 2)).status === "success", 15_000);
  // The unstorable report is not lost silently either: applied (sanitized) or kept in the dead queue.
  const unit1 = await getUnit(api, 1);
  const dead = await queueDepth(conn, place.topology.dead);
  expect(unit1.status === "success" || dead === 1).toBe(true);
});
