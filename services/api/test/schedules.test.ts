import { sql } from "kysely";
import { beforeAll, describe, expect, it } from "vitest";
import type { ApiService } from "@rtb/api";
import { metricValue, parsePrometheusText } from "@rtb/runtime";
import { useTestPlace, waitFor } from "@rtb/testing";
import { call, startApi } from "./support.ts";

// The schedules' HTTP surface, on one api (no leader: nothing is dispatched). The api's timer
// fires the schedules; the tests that need a pass now ask for one (scheduler.refresh).
const place = useTestPlace();
let api: ApiService;
let maxPayloadBytes: number;

beforeAll(async () => {
  // A small broker message limit, so a payload at the limit is small enough to send.
  api = place.own(await startApi(place, { RTB_SEED_UNITS: "0", RTB_BROKER_MAX_MESSAGE_BYTES: "65536", RTB_SCHEDULE_GRACE_MS: "60000" }));
  maxPayloadBytes = (await call(api, "/meta")).body.limits.maxPayloadBytes;
});

const daily = (name: string, extra: object = {}) => ({ name, cron: "0 9 * * *", timeZone: "Europe/Paris", unit: { kind: "report", group: "acme", payload: { name } }, ...extra });
const schedules = async () => (await call(api, "/schedules")).body.schedules as any[];
const setBack = (name: string, to = "2020-01-01T00:00:00Z") => sql`UPDATE schedules SET next_fire_at = ${to}::timestamptz WHERE name = ${name}`.execute(api.database.db);
const unitsOf = async (name: string) => (await call(api, `/units?schedule=${name}&limit=1000`)).body.units as any[];

describe("POST /schedules: what is refused, naming the field, writing nothing", () => {
  it.each([
    [{ cron: "61 * * * *" }, "cron"],
    [{ cron: "every day at nine" }, "cron"],
    [{ cron: "" }, "cron"],
    [{ cron: "0 0 30 2 *" }, "cron"],
    [{ timeZone: "Europe/Nowhere" }, "timeZone"],
    [{ timeZone: "+02:00" }, "timeZone"],
    [{ missed: "sometimes" }, "missed"],
    [{ missed: "each:0" }, "missed"],
    [{ missed: "each:1001" }, "missed"],
    [{ missed: "each" }, "missed"],
    [{ name: "a".repeat(101) }, "name"],
    [{ name: "a b" }, "name"],
    [{ name: "" }, "name"],
    [{ unit: { group: "acme" } }, "unit.kind"],
    [{ unit: { kind: "k", colour: "red" } }, "unit.colour"],
    [{ unit: { kind: "k", maxAttempts: 0 } }, "unit.maxAttempts"],
    [{ unit: undefined }, "unit"],
    [{ paused: "yes" }, "paused"],
  ])("%j is a 400 naming %s", async (change, field) => {
    const before = await schedules();
    const res = await call(api, "/schedules", "POST", { ...daily("refused"), ...change });
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ error: "invalid_request", field });
    expect(res.body.message).not.toMatch(/^Invalid/);
    expect(await schedules()).toEqual(before);
  });

  it("takes a name of 100 characters and a payload at the limit; one byte more is a 413 naming unit.payload", async () => {
    expect((await call(api, "/schedules", "POST", daily("n".repeat(100)))).status).toBe(201);
    // A JSON string of n characters is n + 2 bytes.
    const at = "x".repeat(maxPayloadBytes - 2);
    expect((await call(api, "/schedules", "POST", { ...daily("big"), unit: { kind: "k", payload: at } })).status).toBe(201);
    const over = await call(api, "/schedules", "POST", { ...daily("bigger"), unit: { kind: "k", payload: `${at}x` } });
    expect(over).toMatchObject({ status: 413, body: { error: "payload_too_large", field: "unit.payload", limit: maxPayloadBytes } });
    expect((await call(api, "/schedules/bigger")).status).toBe(404);
    for (const name of ["n".repeat(100), "big"]) expect((await call(api, `/schedules/${name}`, "DELETE")).status).toBe(200);
  });

  it("a producer's ref cannot take the schedules' prefix", async () => {
    const res = await call(api, "/units", "POST", { kind: "k", ref: "schedule:nightly@2026-01-01T00:00:00.000Z" });
    expect(res).toMatchObject({ status: 400, body: { field: "ref" } });
  });
});

describe("a schedule's life", () => {
  it("POST creates it with its next occurrences in UTC, read in its zone; the same name again is a 409", async () => {
    const res = await call(api, "/schedules", "POST", daily("morning"));
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({
      name: "morning",
      cron: "0 9 * * *",
      timeZone: "Europe/Paris",
      unit: { kind: "report", group: "acme", priority: 0, payload: { name: "morning" }, maxAttempts: 3 },
      missed: "skip",
      paused: false,
      pausedAt: null,
      lastFired: null,
      fired: 0,
      skipped: 0,
    });
    const times: string[] = res.body.nextFireTimes;
    expect(times).toHaveLength(5);
    expect(res.body.nextFireAt).toBe(times[0]);
    // 09:00 in Paris: 08:00Z in winter, 07:00Z in summer; a day apart.
    for (const t of times) expect(t).toMatch(/T0[78]:00:00\.000Z$/);
    expect(Date.parse(times[0]!)).toBeGreaterThan(Date.now() - 5_000);
    expect((await call(api, "/schedules", "POST", daily("morning"))).body).toMatchObject({ error: "conflict", field: "name" });
    expect((await call(api, "/schedules/morning")).body).toEqual(res.body);
    expect((await schedules()).map((s) => s.name)).toContain("morning");
  });

  it("PUT changes the definition and the next fire time; unknown names are 404s", async () => {
    const before = (await call(api, "/schedules/morning")).body;
    const res = await call(api, "/schedules/morning", "PUT", { cron: "0 10 * * *", timeZone: "Europe/Paris", unit: { kind: "report2" }, missed: "once" });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ cron: "0 10 * * *", unit: { kind: "report2", group: "default" }, missed: "once" });
    // An hour later on the same wall clock, or the next day's if 10:00 came first.
    const moved = Date.parse(res.body.nextFireAt) - Date.parse(before.nextFireAt);
    expect([3_600_000, 3_600_000 - 86_400_000]).toContain(moved);
    expect((await call(api, "/schedules/nope", "PUT", { cron: "* * * * *", unit: { kind: "k" } })).status).toBe(404);
    expect((await call(api, "/schedules/morning", "PUT", { cron: "nope", unit: { kind: "k" } })).body).toMatchObject({ field: "cron" });
  });

  it("pause: no next occurrences, nothing fires; resume with skip does not backfill what the pause covered", async () => {
    const paused = await call(api, "/schedules/morning/pause", "POST");
    expect(paused.body).toMatchObject({ paused: true, nextFireAt: null, nextFireTimes: [] });
    await call(api, "/schedules/morning", "PUT", { cron: "0 10 * * *", timeZone: "Europe/Paris", unit: { kind: "report2" }, missed: "skip" });
    expect((await call(api, "/schedules/morning")).body.paused).toBe(true);
    // Paused since 2020: nothing fires while paused.
    await setBack("morning");
    await api.scheduler.refresh("test");
    expect(await unitsOf("morning")).toEqual([]);
    const resumed = await call(api, "/schedules/morning/resume", "POST");
    expect(resumed.body).toMatchObject({ paused: false, pausedAt: null });
    await api.scheduler.refresh("test");
    const after = (await call(api, "/schedules/morning")).body;
    expect(await unitsOf("morning")).toEqual([]);
    // Counted up to MISSED_COUNT_LIMIT per gap.
    expect(after.skipped).toBe(1000);
    expect(Date.parse(after.nextFireAt)).toBeGreaterThan(Date.now() - 5_000);
  });

  it("missed once: one unit for the latest missed occurrence, which says its schedule and occurrence", async () => {
    await call(api, "/schedules", "POST", { name: "catchup", cron: "0 0 * * *", unit: { kind: "nightly" }, missed: "once" });
    await setBack("catchup", "2026-01-01T00:00:00Z");
    await api.scheduler.refresh("test");
    const [unit, ...rest] = await unitsOf("catchup");
    expect(rest).toEqual([]);
    const shown = (await call(api, `/units/${unit.id}`)).body;
    expect(shown).toMatchObject({ kind: "nightly", schedule: { name: "catchup" }, ref: `schedule:catchup@${shown.schedule.occurrence}` });
    expect(shown.events[0]).toMatchObject({ status: "pending", detail: { schedule: "catchup" } });
    expect(Date.parse(shown.events[0].detail.occurrence)).toBe(Date.parse(shown.schedule.occurrence));
    const s = (await call(api, "/schedules/catchup")).body;
    expect(s).toMatchObject({ fired: 1, lastFired: { unitId: unit.id, occurrence: shown.schedule.occurrence } });
    // each:N over the same gap: the latest N.
    await call(api, "/schedules/catchup", "PUT", { cron: "0 0 * * *", unit: { kind: "nightly" }, missed: "each:4" });
    await setBack("catchup", "2026-01-01T00:00:00Z");
    await api.scheduler.refresh("test");
    // The latest missed occurrence's unit existed already (its ref): 3 new, 4 in the gap's end.
    expect(await unitsOf("catchup")).toHaveLength(4);
  });

  it("GET / counts the schedules; /metrics counts what fired and what was skipped", async () => {
    const state = (await call(api, "/")).body;
    expect(state.schedules).toMatchObject({ count: 2, paused: 0 });
    expect(Date.parse(state.schedules.nextFireAt)).toBeGreaterThan(Date.now() - 5_000);
    const samples = parsePrometheusText(await (await api.app.request("/metrics")).text());
    expect(metricValue(samples, "rtb_schedule_occurrences_fired_total")).toBe(4);
    expect(metricValue(samples, "rtb_schedule_occurrences_skipped_total")).toBeGreaterThanOrEqual(1000);
  });

  it("DELETE removes the schedule; the units it made stay", async () => {
    const res = await call(api, "/schedules/catchup", "DELETE");
    expect(res).toMatchObject({ status: 200, body: { name: "catchup" } });
    expect((await call(api, "/schedules/catchup")).status).toBe(404);
    expect((await call(api, "/schedules/catchup", "DELETE")).status).toBe(404);
    expect(await unitsOf("catchup")).toHaveLength(4);
  });

  it("an every-second schedule is fired by the api's own timer", async () => {
    await call(api, "/schedules", "POST", { name: "tick", cron: "* * * * * *", unit: { kind: "tick" } });
    const units = await waitFor("two occurrences of the every-second schedule", async () => {
      const u = await unitsOf("tick");
      return u.length >= 2 ? u : null;
    });
    await call(api, "/schedules/tick", "DELETE");
    // Measured, not asserted: how late the api's timer enqueued them.
    const late = units.map((u) => Date.parse(u.createdAt) - Date.parse(u.schedule.occurrence));
    console.log(`every-second schedule: units enqueued ${late.join(", ")} ms after their occurrences`);
  });
});
