import { expect, it } from "vitest";
import { startSystem, useTestPlace, waitFor, type System } from "@rtb/testing";

/**
 * A schedule end to end: an every-second schedule's units are enqueued by the api's timer,
 * dispatched by the top-up it kicks, and run to success by a real agent (no reconcile tick
 * fires here to help).
 */
const place = useTestPlace();

async function send(system: System, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await system.api.app.request(path, { method, headers: { "content-type": "application/json" }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  return { status: res.status, body: await res.json() };
}

it("an every-second schedule's units run to success through a real agent", async () => {
  const system = place.own(await startSystem(place, { RTB_SEED_UNITS: "0", RTB_RECONCILE_CRON: "0 0 1 1 *", RTB_AGENT_WORK_MIN_MS: "0", RTB_AGENT_WORK_MAX_MS: "5", RTB_AGENT_ERROR_RATE: "0" }, { agents: 1 }));
  await system.get("/go");
  expect((await send(system, "POST", "/schedules", { name: "heartbeat", cron: "* * * * * *", unit: { kind: "simulate", group: "ops", payload: { from: "schedule" } } })).status).toBe(201);
  const done = await waitFor("three scheduled units to succeed", async () => {
    const page = await system.get("/units?schedule=heartbeat&status=success&limit=100");
    return page.units.length >= 3 ? page.units : null;
  });
  expect((await send(system, "POST", "/schedules/heartbeat/pause")).body.paused).toBe(true);
  for (const u of done) {
    expect(u).toMatchObject({ kind: "simulate", group: "ops", payload: { from: "schedule" }, schedule: { name: "heartbeat" } });
    expect(u.ref).toBe(`schedule:heartbeat@${u.schedule.occurrence}`);
  }
  const s = (await send(system, "GET", "/schedules/heartbeat")).body;
  expect(s.fired).toBeGreaterThanOrEqual(3);
  // Measured, not asserted: occurrence to enqueue, and to success.
  const timeline = await Promise.all(done.slice(0, 3).map((u: { id: number }) => system.get(`/units/${u.id}`)));
  for (const u of timeline) {
    const success = u.events.find((e: { status: string }) => e.status === "success");
    console.log(`scheduled unit ${u.id}: enqueued ${Date.parse(u.createdAt) - Date.parse(u.schedule.occurrence)} ms after ${u.schedule.occurrence}, succeeded ${Date.parse(success.at) - Date.parse(u.schedule.occurrence)} ms after`);
  }
});
