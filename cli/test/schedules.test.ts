import { sql } from "kysely";
import { beforeAll, describe, expect, it } from "vitest";
import { openTestDb, useTestPlace } from "@rtb/testing";
import type { DbHandle } from "@rtb/db";
import { rtb, rtbJson, startListeningApi, type Listening } from "./support.ts";

/** Schedules through the bin: rtb schedule add|show|pause|resume|rm, rtb schedules, rtb units --schedule. */
const place = useTestPlace();
let h: DbHandle;
let api: Listening;
let env: Record<string, string>;

beforeAll(async () => {
  h = place.own(openTestDb(place));
  api = place.own(await startListeningApi(place, { RTB_SEED_UNITS: "0" }));
  env = { RTB_API_URL: api.url };
});

describe("rtb schedule", () => {
  it("adds a schedule from flags, lists it with its next fire time, shows, pauses, resumes and removes it", async () => {
    const add = await rtb(["schedule", "add", "nightly", "--cron", "0 9 * * *", "--tz", "Europe/Paris", "--kind", "report", "--group", "acme", "--payload", '{"a":1}', "--max-attempts", "2", "--missed", "each:3"], env);
    expect(add).toMatchObject({ code: 0, stdout: expect.stringMatching(/^schedule nightly created: next fire \d{4}-\d\d-\d\d 0[78]:00:00\.000Z\n$/) });
    const shown = await rtbJson(["schedule", "show", "nightly"], env);
    expect(shown).toMatchObject({ name: "nightly", timeZone: "Europe/Paris", missed: "each:3", unit: { kind: "report", group: "acme", payload: { a: 1 }, maxAttempts: 2 } });
    const list = await rtb(["schedules"], env);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^name\s+cron\s+time zone\s+kind\s+missed\s+next fire\s+last fired\s+fired\n/);
    expect(list.stdout).toContain("nightly  0 9 * * *  Europe/Paris  report  each:3");
    expect((await rtb(["schedule", "show", "nightly"], env)).stdout).toContain("next fires");
    expect(await rtb(["schedule", "pause", "nightly"], env)).toMatchObject({ code: 0, stdout: "schedule nightly paused: paused\n" });
    expect((await rtb(["schedules"], env)).stdout).toMatch(/nightly .* paused /);
    expect((await rtb(["schedule", "resume", "nightly"], env)).stdout).toMatch(/^schedule nightly resumed: next fire /);
    expect(await rtb(["schedule", "rm", "nightly"], env)).toMatchObject({ code: 0, stdout: "schedule nightly deleted; the 0 units it made stay\n" });
    expect((await rtbJson(["schedules"], env)).schedules).toEqual([]);
  });

  it("changes a schedule with set: the whole definition replaced, its paused state kept", async () => {
    await rtbJson(["schedule", "add", "hourly", "--cron", "0 * * * *", "--kind", "report", "--group", "acme", "--paused"], env);
    const set = await rtb(["schedule", "set", "hourly", "--cron", "30 10 * * *", "--tz", "Asia/Tokyo", "--kind", "digest"], env);
    expect(set).toMatchObject({ code: 0, stdout: "schedule hourly changed: paused\n" });
    const shown = await rtbJson(["schedule", "show", "hourly"], env);
    // What set left out took its default (group), and it stayed paused.
    expect(shown).toMatchObject({ cron: "30 10 * * *", timeZone: "Asia/Tokyo", unit: { kind: "digest", group: "default" }, paused: true });
    expect(await rtb(["schedule", "set", "hourly", "--kind", "digest"], env)).toMatchObject({ code: 2, stderr: expect.stringContaining("give --cron") });
    expect(await rtb(["schedule", "set", "nothing-here", "--cron", "* * * * *", "--kind", "k"], env)).toMatchObject({ code: 1, stderr: expect.stringContaining("no schedule named nothing-here") });
    await rtb(["schedule", "rm", "hourly"], env);
  });

  it("lists a schedule's units with rtb units --schedule", async () => {
    await rtbJson(["schedule", "add", "yearly", "--cron", "0 0 1 1 *", "--kind", "k", "--missed", "once"], env);
    await sql`UPDATE schedules SET next_fire_at = '2020-01-01T00:00:00Z' WHERE name = 'yearly'`.execute(h.db);
    await api.api.scheduler.refresh("test");
    const page = await rtbJson(["units", "--schedule", "yearly"], env);
    expect(page.units).toHaveLength(1);
    expect(page.units[0]).toMatchObject({ kind: "k", schedule: { name: "yearly" } });
    expect((await rtb(["unit", String(page.units[0].id)], env)).stdout).toMatch(/schedule\s+yearly, occurrence /);
  });

  it("refuses bad usage before sending anything (exit 2), and relays the api's refusal naming the field (exit 1)", async () => {
    expect(await rtb(["schedule", "add", "x", "--kind", "k"], env)).toMatchObject({ code: 2, stderr: expect.stringContaining("give --cron") });
    expect(await rtb(["schedule", "add", "x", "--cron", "* * * * *"], env)).toMatchObject({ code: 2, stderr: expect.stringContaining("give --kind") });
    expect(await rtb(["schedule", "add", "x", "--cron", "* * * * *", "--kind", "k", "--missed", "always"], env)).toMatchObject({ code: 2, stderr: expect.stringContaining("--missed") });
    expect(await rtb(["schedule", "frobnicate", "x"], env)).toMatchObject({ code: 2, stderr: expect.stringContaining("expected one of add") });
    expect(await rtb(["schedule", "pause", "x", "--cron", "* * * * *"], env)).toMatchObject({ code: 2, stderr: expect.stringContaining("--cron goes with rtb schedule add") });
    expect(await rtb(["schedule", "add", "a b", "--cron", "* * * * *", "--kind", "k"], env)).toMatchObject({ code: 2, stderr: expect.stringContaining("NAME") });
    expect(await rtb(["schedule", "add", "x", "--cron", "99 * * * *", "--kind", "k"], env)).toMatchObject({ code: 1, stderr: expect.stringContaining("(field: cron)") });
    expect(await rtb(["schedule", "add", "x", "--cron", "* * * * *", "--tz", "Mars/Olympus", "--kind", "k"], env)).toMatchObject({ code: 1, stderr: expect.stringContaining("(field: timeZone)") });
    expect(await rtb(["schedule", "rm", "missing"], env)).toMatchObject({ code: 1, stderr: expect.stringContaining("no schedule named missing") });
    expect((await rtbJson(["schedules"], env)).schedules.map((s: { name: string }) => s.name)).toEqual(["yearly"]);
  });
});
