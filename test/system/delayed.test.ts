import { expect, it } from "vitest";
import { MAX_DELAY_MS } from "@rtb/protocol";
import { startSystem, useTestPlace, waitFor, type System } from "@rtb/testing";

/**
 * Delayed units (POST /units `runAt` or `delayMs`): pending but not ready until due, left out
 * of GET /next and the top-up until then, and dispatched when due by the dispatcher's own
 * timer (the reconcile tick never fires here), with the due time in the timeline.
 */
const place = useTestPlace();

async function post(system: System, body: unknown): Promise<{ status: number; body: any }> {
  const res = await system.api.app.request("/units", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return { status: res.status, body: await res.json() };
}

it("a delayed unit waits, out of the preview, and is dispatched when due by the dispatcher's timer", async () => {
  const system = place.own(await startSystem(place, { RTB_SEED_UNITS: "0", RTB_RECONCILE_CRON: "0 0 1 1 *", RTB_AGENT_WORK_MIN_MS: "0", RTB_AGENT_WORK_MAX_MS: "5", RTB_AGENT_ERROR_RATE: "0" }, { agents: 1 }));
  await system.get("/go");
  const before = Date.now();
  const delayed = await post(system, { kind: "simulate", delayMs: 1_500 });
  expect(delayed.status).toBe(201);
  const due = Date.parse(delayed.body.unit.notBefore);
  expect(due).toBeGreaterThanOrEqual(before + 1_400);
  expect(due).toBeLessThanOrEqual(Date.now() + 1_600);
  const past = await post(system, { kind: "simulate", runAt: "2020-01-01T00:00:00Z" });
  expect(past.body.unit.notBefore).toBeNull();

  // The one in the past runs now; the delayed one is not in the preview while it waits.
  await waitFor("the unit due in the past to succeed", async () => ((await system.get(`/units/${past.body.unit.id}`)).status === "success" ? true : null));
  expect((await system.get("/next")).units.map((u: { id: number }) => u.id)).not.toContain(delayed.body.unit.id);
  const waiting = await system.get(`/units/${delayed.body.unit.id}`);
  expect(waiting).toMatchObject({ status: "pending", attempt: 0 });
  expect(waiting.events).toEqual([expect.objectContaining({ status: "pending", source: "api", detail: { due: expect.any(String) } })]);
  expect(Date.parse(waiting.events[0].detail.due)).toBe(due);

  const done = await waitFor("the delayed unit to succeed", async () => {
    const u = await system.get(`/units/${delayed.body.unit.id}`);
    return u.status === "success" ? u : null;
  });
  const dispatched = done.events.find((e: { status: string }) => e.status === "dispatched");
  expect(Date.parse(dispatched.at)).toBeGreaterThanOrEqual(due);
  // Woken by the timer at the due time: no reconcile tick fires here, and nothing else comes
  // to trigger a top-up (a generous bound, not a speed figure: a missed wake-up never comes).
  expect(Date.parse(dispatched.at) - due).toBeLessThan(5_000);
});

it("refuses a malformed or absurd time, or both ways at once, naming the field; takes the longest delay and not one millisecond more", async () => {
  const system = place.own(await startSystem(place, { RTB_SEED_UNITS: "0" }, { agents: 0 }));
  const refused = async (body: unknown, field: string) => {
    const res = await post(system, body);
    expect(res.status, JSON.stringify(body)).toBe(400);
    expect(res.body.field).toBe(field);
    expect(res.body.message).not.toMatch(/Invalid input/);
  };
  await refused({ kind: "k", runAt: "tomorrow" }, "runAt");
  await refused({ kind: "k", runAt: "2027-01-31T09:00:00" }, "runAt");
  await refused({ kind: "k", runAt: new Date(Date.now() + MAX_DELAY_MS + 60_000).toISOString() }, "runAt");
  await refused({ kind: "k", delayMs: -1 }, "delayMs");
  await refused({ kind: "k", delayMs: 1.5 }, "delayMs");
  await refused({ kind: "k", delayMs: MAX_DELAY_MS + 1 }, "delayMs");
  await refused({ kind: "k", delayMs: 10, runAt: "2027-01-31T09:00:00Z" }, "delayMs");
  await refused([{ kind: "k" }, { kind: "k", runAt: "soon" }], "[1].runAt");
  const longest = await post(system, { kind: "k", delayMs: MAX_DELAY_MS });
  expect(longest.status).toBe(201);
  expect(Date.parse(longest.body.unit.notBefore)).toBeGreaterThan(Date.now() + MAX_DELAY_MS - 60_000);
  const ahead = await post(system, { kind: "k", runAt: new Date(Date.now() + MAX_DELAY_MS - 60_000).toISOString() });
  expect(ahead.status).toBe(201);
  // Nothing refused was written: the two accepted units only.
  expect((await system.get("/")).counts.pending).toBe(2);
});

it("GET / and GET /units count the units on a clock apart from the ready ones and those waiting for an agent, and list them", async () => {
  // Paused: nothing is dispatched, so the backlog keeps its shape.
  // The same database as the tests above: their units are counted before.
  const system = place.own(await startSystem(place, { RTB_SEED_UNITS: "0" }, { agents: 0 }));
  expect((await system.api.app.request("/pause", { method: "POST" })).status).toBe(200);
  const was = (await system.get("/")).backlog;
  const soon = new Date(Date.now() + 3_600_000).toISOString();
  const later = new Date(Date.now() + 7_200_000).toISOString();
  const batch = await post(system, [{ kind: "k" }, { kind: "k" }, { kind: "k", runAt: later }, { kind: "k", runAt: soon }, { kind: "k", delayMs: 86_400_000 }]);
  expect(batch.status).toBe(201);
  const state = await system.get("/");
  expect(state.backlog).toEqual({ ready: was.ready + 2, onClock: was.onClock + 3, forAgents: 0, nextDueAt: soon });
  expect(state.backlog.ready + state.backlog.onClock + state.backlog.forAgents).toBe(state.counts.pending);

  const ids = batch.body.units.map((u: { id: number }) => u.id);
  const page = await system.get("/units?waiting=clock");
  const mine = page.units.filter((u: { id: number }) => ids.includes(u.id));
  expect(mine.map((u: { id: number }) => u.id).sort()).toEqual(ids.slice(2).sort());
  expect(page.units.every((u: { status: string; notBefore: string | null }) => u.status === "pending" && u.notBefore !== null)).toBe(true);
  expect(page.backlog).toEqual(state.backlog);
  expect((await system.get("/units?waiting=nothing")).units.filter((u: { id: number }) => ids.includes(u.id))).toHaveLength(2);
  expect((await system.get("/units?waiting=agent")).units).toHaveLength(0);

  const bad = await system.api.app.request("/units?waiting=soon");
  expect(bad.status).toBe(400);
  expect(await bad.json()).toMatchObject({ field: "waiting" });

  // Cancelling one on a clock leaves the counts exact.
  expect((await system.api.app.request(`/units/${ids[2]}/cancel`, { method: "POST" })).status).toBe(200);
  expect((await system.get("/")).backlog.onClock).toBe(was.onClock + 2);
});
