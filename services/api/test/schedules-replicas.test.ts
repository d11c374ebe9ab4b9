import { expect, it } from "vitest";
import type { ApiService } from "@rtb/api";
import { useTestPlace, waitFor } from "@rtb/testing";
import { call, startApi } from "./support.ts";

// Two api replicas on one database and an every-second schedule: each occurrence makes one
// unit, and none is left out. The `schedules` duty's holder fires them (services/api/test/duties.test.ts
// hands it over); db/test/schedules.test.ts races two passes past the duty.
const place = useTestPlace();

it("two apis fire an every-second schedule: one unit per occurrence, every second", async () => {
  const apis: ApiService[] = [];
  for (const id of ["api-a", "api-b"]) apis.push(place.own(await startApi(place, { RTB_SEED_UNITS: "0", RTB_API_ID: id })));
  const [a, b] = apis as [ApiService, ApiService];
  expect((await call(a, "/schedules", "POST", { name: "tick", cron: "* * * * * *", unit: { kind: "tick" } })).status).toBe(201);
  // b learns of it on its next look (the reconciler's tick, here asked for at once).
  await b.scheduler.refresh("test");
  const units = () => a.database.db.selectFrom("units").select(["id", "scheduled_for"]).where("schedule_name", "=", "tick").orderBy("scheduled_for").execute();
  await waitFor("six occurrences", async () => ((await units()).length >= 6 ? true : null), 30_000, 200);
  await call(b, "/schedules/tick", "DELETE");
  // A pass that was under way when the schedule went finishes first.
  await Promise.all(apis.map((x) => x.scheduler.refresh("test")));
  const made = await units();
  const seconds = made.map((u) => u.scheduled_for!.getTime());
  expect(new Set(seconds).size).toBe(made.length);
  for (let i = 1; i < seconds.length; i++) expect(seconds[i]! - seconds[i - 1]!).toBe(1000);
  console.log(`two apis: ${made.length} occurrences, ${a.stats.scheduleFired} fired by api-a, ${b.stats.scheduleFired} by api-b`);
  expect(a.stats.scheduleFired + b.stats.scheduleFired).toBe(made.length);
});
