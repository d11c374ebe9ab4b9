import { describe, expect, it } from "vitest";
import { canonicalTimeZone, MISSED_COUNT_LIMIT, nextOccurrence, occurrencesAfter, planFiring, ScheduleTimeError } from "./schedule-times.ts";

const at = (iso: string) => new Date(iso);
const iso = (ds: Date[]) => ds.map((d) => d.toISOString());

describe("occurrences in a time zone", () => {
  it("09:00 Europe/Paris is 08:00Z in winter and 07:00Z in summer, across both changes of 2026", () => {
    // Spring forward on Sunday 29 March 2026 (02:00 CET -> 03:00 CEST).
    expect(iso(occurrencesAfter("0 9 * * *", "Europe/Paris", at("2026-03-27T12:00:00Z"), 4))).toEqual([
      "2026-03-28T08:00:00.000Z",
      "2026-03-29T07:00:00.000Z",
      "2026-03-30T07:00:00.000Z",
      "2026-03-31T07:00:00.000Z",
    ]);
    // Fall back on Sunday 25 October 2026 (03:00 CEST -> 02:00 CET).
    expect(iso(occurrencesAfter("0 9 * * *", "Europe/Paris", at("2026-10-24T12:00:00Z"), 2))).toEqual(["2026-10-25T08:00:00.000Z", "2026-10-26T08:00:00.000Z"]);
  });

  it("a wall time the spring-forward skips fires once after it; one the fall-back repeats fires once", () => {
    expect(iso(occurrencesAfter("30 2 * * *", "Europe/Paris", at("2026-03-28T12:00:00Z"), 2))).toEqual(["2026-03-29T01:30:00.000Z", "2026-03-30T00:30:00.000Z"]);
    expect(iso(occurrencesAfter("30 2 * * *", "Europe/Paris", at("2026-10-24T12:00:00Z"), 2))).toEqual(["2026-10-25T00:30:00.000Z", "2026-10-26T01:30:00.000Z"]);
  });

  it("reads 5 fields as crontab and 6 with seconds first; the next occurrence is strictly after", () => {
    expect(nextOccurrence("0 0 1 1 *", "UTC", at("2026-01-01T00:00:00Z"))).toEqual(at("2027-01-01T00:00:00Z"));
    expect(iso(occurrencesAfter("*/10 * * * * *", "UTC", at("2026-01-01T00:00:05Z"), 2))).toEqual(["2026-01-01T00:00:10.000Z", "2026-01-01T00:00:20.000Z"]);
  });

  it("refuses a bad expression or zone, naming which", () => {
    const field = (fn: () => unknown) => {
      try {
        fn();
      } catch (err) {
        expect(err).toBeInstanceOf(ScheduleTimeError);
        return (err as ScheduleTimeError).field;
      }
      return "none";
    };
    expect(field(() => nextOccurrence("61 * * * *", "UTC", new Date()))).toBe("cron");
    expect(field(() => nextOccurrence("every day", "UTC", new Date()))).toBe("cron");
    expect(field(() => nextOccurrence(" ", "UTC", new Date()))).toBe("cron");
    expect(field(() => nextOccurrence("0 0 30 2 *", "UTC", new Date()))).toBe("cron");
    expect(field(() => nextOccurrence("* * * * * * *", "UTC", new Date()))).toBe("cron");
    expect(field(() => nextOccurrence("0 9 * * *", "Europe/Nowhere", new Date()))).toBe("timeZone");
    expect(field(() => nextOccurrence("0 9 * * *", "+02:00", new Date()))).toBe("timeZone");
    expect(canonicalTimeZone("europe/paris")).toBe("Europe/Paris");
    expect(canonicalTimeZone("utc")).toBe("UTC");
  });
});

describe("what one pass fires", () => {
  const hourly = { cron: "0 * * * *", timeZone: "UTC" };
  const now = at("2026-06-10T12:00:30Z");
  const grace = 60_000;

  it("an occurrence on time (late by less than the grace) fires, whatever the policy", () => {
    const plan = planFiring({ ...hourly, nextFireAt: at("2026-06-10T12:00:00Z"), missed: { policy: "skip" } }, now, grace);
    expect(plan).toEqual({ fire: [at("2026-06-10T12:00:00Z")], skipped: 0, next: at("2026-06-10T13:00:00Z") });
  });

  it("missed occurrences: skip runs none, once the latest, each:N the latest N; the rest are counted as skipped", () => {
    // 07:00 to 11:00 were missed (5), 12:00 is on time.
    const s = { ...hourly, nextFireAt: at("2026-06-10T07:00:00Z") };
    expect(planFiring({ ...s, missed: { policy: "skip" } }, now, grace)).toEqual({ fire: [at("2026-06-10T12:00:00Z")], skipped: 5, next: at("2026-06-10T13:00:00Z") });
    expect(iso(planFiring({ ...s, missed: { policy: "once" } }, now, grace).fire)).toEqual(["2026-06-10T11:00:00.000Z", "2026-06-10T12:00:00.000Z"]);
    const each = planFiring({ ...s, missed: { policy: "each", max: 3 } }, now, grace);
    expect(iso(each.fire)).toEqual(["2026-06-10T09:00:00.000Z", "2026-06-10T10:00:00.000Z", "2026-06-10T11:00:00.000Z", "2026-06-10T12:00:00.000Z"]);
    expect(each.skipped).toBe(2);
    expect(planFiring({ ...s, missed: { policy: "each", max: 100 } }, now, grace)).toMatchObject({ skipped: 0 });
  });

  it("a per-second schedule late by a few seconds fires each second it was late; the count of a long gap is bounded", () => {
    const s = { cron: "* * * * * *", timeZone: "UTC", missed: { policy: "skip" as const } };
    expect(planFiring({ ...s, nextFireAt: at("2026-06-10T12:00:27Z") }, now, grace).fire).toHaveLength(4);
    const long = planFiring({ ...s, nextFireAt: at("2026-06-01T00:00:00Z") }, now, grace);
    expect(long).toMatchObject({ skipped: MISSED_COUNT_LIMIT, next: at("2026-06-10T12:00:31Z") });
    expect(long.fire).toHaveLength(61);
  });
});
