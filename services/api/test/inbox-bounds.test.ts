import type { ChannelModel } from "amqplib";
import { sql } from "kysely";
import { beforeAll, expect, it } from "vitest";
import type { ApiService } from "@rtb/api";
import { LISTED_PER_SERVICE, pruneInstances, type DbHandle } from "@rtb/db";
import { openTestDb, rawBroker, useTestPlace, waitFor } from "@rtb/testing";
import { call, getUnit, publishRaw, startApi, statusMessage } from "./support.ts";

// Times and counters in messages come from other hosts, or from a bogus message. Whatever
// they say, the api's clock bounds the times, and counters and registries stay bounded.
const place = useTestPlace();
let api: ApiService;
let conn: ChannelModel;
let db: DbHandle;

beforeAll(async () => {
  api = place.own(await startApi(place));
  conn = place.own(await rawBroker());
  db = place.own(openTestDb(place));
  await call(api, "/go");
});

const send = (...bodies: (object | string)[]) => publishRaw(conn, place.topology.inbox, ...bodies);
const state = async () => (await call(api, "/")).body;
const beat = (service: string, id: string, startedAt: string, deadLettered: number) =>
  statusMessage([], { service, id, startedAt } as never, { counters: { deadLettered } });

it("a leader report dated 9999 does not hide the real leader's later reports, and update times are clamped to now", async () => {
  const future = "9999-01-01T00:00:00.000Z";
  const utilization = (at: string) => ({ at, kinds: {} });
  await send(statusMessage([{ unitId: 1, attempt: 1, status: "queued", at: future } as never], { service: "leader", id: "bogus" }, { utilization: utilization(future) }));
  await waitFor("the bogus report to be applied", async () => (await getUnit(api, 1)).status === "queued");
  const queuedAt = new Date((await getUnit(api, 1)).events[1]!.at).getTime();
  expect(queuedAt).toBeLessThanOrEqual(Date.now());

  await new Promise((r) => setTimeout(r, 50));
  const now = new Date().toISOString();
  await send(statusMessage([{ unitId: 2, attempt: 1, status: "queued", at: now } as never], { service: "leader", id: "real" }, { utilization: utilization(now) }));
  const leader = await waitFor("the real leader to be shown", async () => ((await state()).leader?.id === "real" ? (await state()).leader : null), 10_000);
  expect(leader.reportedAt).toBe(now);
});

it("refuses heartbeat counters beyond any plausible count and lifetimes that start in the future", async () => {
  const startedAt = new Date(Date.now() - 60_000).toISOString();
  await send(
    beat("agent", "agent-poison", startedAt, 3),
    beat("agent", "agent-poison", startedAt, Number.MAX_SAFE_INTEGER),
    beat("agent", "agent-future", "9999-01-01T00:00:00.000Z", 1),
  );
  const body = await waitFor("both refusals to be counted", async () => {
    const b = await state();
    return b.reports.ignored.implausible_heartbeat === 2 ? b : null;
  });
  expect(body.deadLetters.byService.agent).toBe(3);
  const agents = body.services.agents.map((a: { id: string }) => a.id);
  expect(agents).toContain("agent-poison");
  expect(agents).not.toContain("agent-future");
  // A later plausible heartbeat still counts.
  await send(beat("agent", "agent-poison", startedAt, 5));
  await waitFor("the plausible total", async () => (await state()).deadLetters.byService.agent === 5);
});

it("GET / stays bounded whatever heartbeats arrive, and pruned instances keep their dead-letter totals", async () => {
  const startedAt = new Date(Date.now() - 60_000).toISOString();
  const before = (await state()).deadLetters.byService.agent as number;
  const beats = Array.from({ length: 500 }, (_, i) => beat("agent", `flood-${i}`, startedAt, 1));
  await send(...beats);
  await waitFor("every flood heartbeat to be recorded", async () => {
    const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM service_instances WHERE id LIKE 'flood-%'`.execute(db.db);
    return rows[0]!.n === 500;
  });
  const res = await api.app.request("/");
  const text = await res.text();
  const body = JSON.parse(text);
  expect(body.services.agents.length).toBeLessThanOrEqual(LISTED_PER_SERVICE);
  expect(text.length).toBeLessThan(50_000);
  expect(body.deadLetters.byService.agent).toBe(before + 500);

  // Pruning (the reconciler runs it once a minute) keeps the most recently seen rows only,
  // and folds the others' totals into service_retired: the totals do not move.
  const pruned = await pruneInstances(db.db, { keep: 20 });
  expect(pruned).toBeGreaterThanOrEqual(480);
  const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM service_instances`.execute(db.db);
  expect(rows[0]!.n).toBe(20);
  expect((await state()).deadLetters.byService.agent).toBe(before + 500);
});
