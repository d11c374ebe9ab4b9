import pg from "pg";
import { expect, it } from "vitest";
import { runScript, testServers } from "@rtb/testing";

/**
 * `npm run bench:inbox`, tiny: 300 units' reports applied by one api, then by two. Speed is
 * not asserted (the machine is shared); what is asserted is that both runs applied every
 * report, printed their figures, and dropped their databases; and a bad flag is refused.
 */
const benchInbox = (args: string[]) => runScript("scripts/bench-inbox.ts", args);

it("applies every unit's three reports with one api, then two, prints reports/s for each, and leaves no database behind", async () => {
  const { code, stdout, stderr } = await benchInbox(["--units", "300", "--apis", "1,2", "--per-message", "3"]);
  expect(code, stderr).toBe(0);
  expect(stdout).toContain("inbox application: 300 units, 3 reports each (queued per 100 units, processing and success per 3)");
  // 300 / 100 queued messages + 2 x 300 / 3 agent messages.
  expect(stdout).toMatch(/^ {2}1 api\(s\) +[\d,]+ reports\/s {2}\([\d,]+ units\/s, 203 messages in [\d.]+ s\)$/m);
  expect(stdout).toMatch(/^ {2}2 api\(s\) +[\d,]+ reports\/s {2}\([\d,]+ units\/s, 203 messages in [\d.]+ s\) {2}x[\d.]+ of 1$/m);
  const databases = [...stderr.matchAll(/\(database (rtb_inbox_\w+)\)/g)].map((m) => m[1]!);
  expect(databases).toHaveLength(2);
  const { db } = testServers();
  const admin = new pg.Client({ host: db.host, port: db.port, user: db.user, password: db.password, database: "postgres" });
  await admin.connect();
  try {
    const { rows } = await admin.query("SELECT datname FROM pg_database WHERE datname = ANY($1)", [databases]);
    expect(rows).toEqual([]);
  } finally {
    await admin.end();
  }
}, 180_000);

it("refuses a bad flag, naming it (exit 2)", async () => {
  const { code, stderr } = await benchInbox(["--units", "100001"]);
  expect(code).toBe(2);
  expect(stderr).toContain("--units=100001: expected a whole number from 100 to 100000");
});
