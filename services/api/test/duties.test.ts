import { expect, it } from "vitest";
import { DUTY_NAMES } from "@rtb/protocol";
import { metricValue, parsePrometheusText } from "@rtb/runtime";
import { useTestPlace, waitFor } from "@rtb/testing";
import { call, startApi } from "./support.ts";

// Two api replicas on one database: the duties done once (reconciler, schedules, retention,
// tally folds) are held by one of them, GET / on either says which, and they pass to the other
// when the holder stops. (test/system/replicas.test.ts kills one with SIGKILL instead.)
const place = useTestPlace();

it("one api holds every duty and GET / on both says so; when it stops, the other takes them over", async () => {
  const env = { RTB_SEED_UNITS: "0", RTB_DUTY_LEASE_MS: "900" };
  const a = await startApi(place, { ...env, RTB_API_ID: "api-a" });
  const b = place.own(await startApi(place, { ...env, RTB_API_ID: "api-b" }));
  const held = (s: any) => s.duties.leases.map((l: any) => [l.duty, l.holder]);
  for (const api of [a, b]) {
    const { body } = await call(api, "/");
    expect(held(body)).toEqual(DUTY_NAMES.map((d) => [d, "api-a"]));
    expect(body.duties.thisApi).toBe(api === a ? "api-a" : "api-b");
    expect(body.duties.heldByThisApi).toEqual(api === a ? [...DUTY_NAMES] : []);
  }
  // And their metrics: 1 per duty summed over the apis.
  const heldMetric = async (api: typeof a) => {
    const samples = parsePrometheusText(await (await api.app.request("/metrics")).text());
    return DUTY_NAMES.map((duty) => metricValue(samples, "rtb_duty_held", { duty }));
  };
  expect(await heldMetric(a)).toEqual(DUTY_NAMES.map(() => 1));
  expect(await heldMetric(b)).toEqual(DUTY_NAMES.map(() => 0));
  // Renewals keep them with api-a: b's claims every 300 ms get nothing.
  await new Promise((r) => setTimeout(r, 1_500));
  expect(b.duties.held()).toEqual([]);
  expect(held((await call(b, "/")).body)).toEqual(DUTY_NAMES.map((d) => [d, "api-a"]));

  // A duty's work is its holder's: a schedule made on b is fired by a only.
  expect((await call(b, "/schedules", "POST", { name: "tick", cron: "* * * * * *", unit: { kind: "tick" } })).status).toBe(201);
  await a.scheduler.refresh("test");
  await waitFor("the schedule to fire", async () => (a.stats.scheduleFired >= 2 ? true : null), 10_000, 100);
  expect(b.stats.scheduleFired).toBe(0);

  await a.stop();
  // Given up on stop: b takes them at its next claim, well within a lease.
  await waitFor("api-b to hold every duty", () => (b.duties.held().length === DUTY_NAMES.length ? true : null), 2_000, 20);
  const { body } = await call(b, "/");
  expect(body.duties.leases.map((l: any) => [l.duty, l.holder, l.lastHolder, l.handovers])).toEqual(DUTY_NAMES.map((d) => [d, "api-b", "api-b", 1]));
  // And b fires the schedule now, from where a left it.
  const before = b.stats.scheduleFired;
  await waitFor("api-b to fire the schedule", async () => (b.stats.scheduleFired > before ? true : null), 10_000, 100);
  const units = await b.database.db.selectFrom("units").select("scheduled_for").where("schedule_name", "=", "tick").orderBy("scheduled_for").execute();
  const seconds = units.map((u) => u.scheduled_for!.getTime());
  expect(new Set(seconds).size).toBe(seconds.length);
  for (let i = 1; i < seconds.length; i++) expect(seconds[i]! - seconds[i - 1]!).toBe(1000);
});
