import { sql } from "kysely";
import { beforeAll, describe, expect, it } from "vitest";
import { createSchedule, fireDue, fireDueSchedules, findSchedule, getUnit, type DbHandle, type ScheduleDefinition } from "@rtb/db";
import { openTestDb, useTestPlace } from "@rtb/testing";

// Exactly one unit per occurrence, whatever races: two replicas' passes at once, two passes
// past the duty lock, an occurrence fired again.
const place = useTestPlace();
let a: DbHandle;
let b: DbHandle;

beforeAll(() => {
  a = place.own(openTestDb(place));
  b = place.own(openTestDb(place));
});

const yearly = (kind: string): ScheduleDefinition & { paused: boolean } => ({
  cron: "0 0 1 1 *",
  timeZone: "UTC",
  unit: { kind, group: "default", priority: 0, payload: { kind }, maxAttempts: 3 },
  missed: "skip",
  paused: false,
});
/** Every 1 January since 2020 is on time with this grace: all of them fire. */
const GRACE = 20 * 366 * 24 * 3600 * 1000;
const JAN_FIRSTS = new Date().getUTCFullYear() - 2020 + 1;

async function overdue(name: string) {
  await createSchedule(a.db, name, yearly(name));
  await sql`UPDATE schedules SET next_fire_at = '2020-01-01T00:00:00Z' WHERE name = ${name}`.execute(a.db);
}

const unitsOf = (name: string) =>
  a.db.selectFrom("units").select(["id", "ref", "scheduled_for"]).where("schedule_name", "=", name).orderBy("scheduled_for").execute();

describe("a schedule's occurrences, exactly once", () => {
  it("two replicas passing at once: one does the pass, one unit per occurrence", async () => {
    await overdue("race");
    const [x, y] = await Promise.all([fireDueSchedules(a.db, { graceMs: GRACE }), fireDueSchedules(b.db, { graceMs: GRACE })]);
    const units = await unitsOf("race");
    expect(units).toHaveLength(JAN_FIRSTS);
    expect(units.map((u) => u.ref)).toEqual(units.map((u) => `schedule:race@${u.scheduled_for!.toISOString()}`));
    expect(new Set(units.map((u) => u.scheduled_for!.toISOString())).size).toBe(JAN_FIRSTS);
    const fired = [x, y].flatMap((r) => (r.ran ? r.value.fired : []));
    expect(fired.filter((f) => f.created)).toHaveLength(JAN_FIRSTS);
    const s = await findSchedule(a.db, "race");
    expect(s).toMatchObject({ fired: JAN_FIRSTS, skipped: 0, nextFireAt: new Date(`${new Date().getUTCFullYear() + 1}-01-01T00:00:00Z`) });
    expect(s!.lastFired).toMatchObject({ unitId: units.at(-1)!.id, occurrence: units.at(-1)!.scheduled_for });
  });

  it("two passes past the duty lock at once: the due rows' locks make the second find nothing due", async () => {
    await overdue("unlocked");
    const [x, y] = await Promise.all([
      a.db.transaction().execute((trx) => fireDue(trx, { graceMs: GRACE })),
      b.db.transaction().execute((trx) => fireDue(trx, { graceMs: GRACE })),
    ]);
    expect(await unitsOf("unlocked")).toHaveLength(JAN_FIRSTS);
    expect([...x.fired, ...y.fired].filter((f) => f.schedule === "unlocked")).toHaveLength(JAN_FIRSTS);
  });

  it("an occurrence fired again (next_fire_at set back) finds its unit by ref and makes none", async () => {
    await overdue("again");
    await fireDueSchedules(a.db, { graceMs: GRACE });
    const before = await unitsOf("again");
    await sql`UPDATE schedules SET next_fire_at = '2020-01-01T00:00:00Z' WHERE name = 'again'`.execute(a.db);
    const pass = await fireDueSchedules(b.db, { graceMs: GRACE });
    expect(pass.ran && pass.value.fired.filter((f) => f.schedule === "again").map((f) => f.created)).toEqual(Array(JAN_FIRSTS).fill(false));
    expect(await unitsOf("again")).toEqual(before);
    expect((await findSchedule(a.db, "again"))!.fired).toBe(JAN_FIRSTS);
  });

  it("a unit says which schedule and occurrence made it, in its row and its first event", async () => {
    await overdue("said");
    await fireDueSchedules(a.db, { graceMs: GRACE });
    const [first] = await unitsOf("said");
    const unit = await getUnit(a.db, first!.id);
    expect(unit).toMatchObject({ kind: "said", payload: { kind: "said" }, ref: "schedule:said@2020-01-01T00:00:00.000Z", schedule: { name: "said", occurrence: new Date("2020-01-01T00:00:00Z") } });
    expect(unit!.events).toEqual([expect.objectContaining({ attempt: 0, status: "pending", source: "api", detail: { schedule: "said", occurrence: expect.any(String) } })]);
    expect(Date.parse((unit!.events[0]!.detail as { occurrence: string }).occurrence)).toBe(Date.parse("2020-01-01T00:00:00Z"));
  });

  it("missed occurrences go by the policy: skip none, once one, each:N the latest N", async () => {
    for (const [name, missed] of [["m-skip", "skip"], ["m-once", "once"], ["m-each", "each:3"]] as const) {
      await createSchedule(a.db, name, { ...yearly(name), missed });
      await sql`UPDATE schedules SET next_fire_at = '2020-01-01T00:00:00Z' WHERE name = ${name}`.execute(a.db);
    }
    // A grace of a minute: every 1 January since 2020 was missed (unless this runs at New Year).
    await fireDueSchedules(a.db, { graceMs: 60_000 });
    expect(await unitsOf("m-skip")).toHaveLength(0);
    expect((await findSchedule(a.db, "m-skip"))!.skipped).toBe(JAN_FIRSTS);
    expect((await unitsOf("m-once")).map((u) => u.scheduled_for!.getUTCFullYear())).toEqual([new Date().getUTCFullYear()]);
    const year = new Date().getUTCFullYear();
    expect((await unitsOf("m-each")).map((u) => u.scheduled_for!.getUTCFullYear())).toEqual([year - 2, year - 1, year]);
    expect((await findSchedule(a.db, "m-each"))!.skipped).toBe(JAN_FIRSTS - 3);
  });
});
