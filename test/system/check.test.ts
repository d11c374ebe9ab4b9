import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { sql } from "kysely";
import { beforeAll, expect, it } from "vitest";
import { loadApiConfig, startApiService } from "@rtb/api";
import type { DbHandle } from "@rtb/db";
import { openTestDb, rawBroker, testLogger, useTestPlace, waitFor } from "@rtb/testing";

/** `npm run check` as an operator runs it: a process, its output and its exit code. */
const root = fileURLToPath(new URL("../..", import.meta.url));
const place = useTestPlace();
let db: DbHandle;

beforeAll(() => {
  db = place.own(openTestDb(place));
});

function check(...args: string[]): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, ["--import", "tsx", "scripts/check.ts", "--sample", "0.3", "--grace", "0", ...args], {
    cwd: root,
    env: { ...process.env, ...place.env, RTB_DISPATCH_TIMEOUT_MS: "200", RTB_BROADCAST_MAX_QUEUE: "5" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  return new Promise((resolve) => child.on("exit", (code) => resolve({ code, output })));
}

it("passes a live system, then names each broken rule and exits 1", async () => {
  // An api dispatches 5 of its 10 units and stops: they wait in the outbox for a leader.
  const api = await startApiService(loadApiConfig({ ...place.env, RTB_SEED_UNITS: "10", RTB_BROADCAST_MAX_QUEUE: "5", RTB_RECONCILE_CRON: "0 0 1 1 *" }), testLogger("api"));
  const go = (await (await api.app.request("/go")).json()) as { dispatchedNow: number };
  expect(go.dispatchedNow).toBe(5);
  await api.stop();
  await waitFor("the dispatch timeout to pass", async () => {
    const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM units WHERE dispatched_at < now() - interval '300 ms'`.execute(db.db);
    return rows[0]!.n === 5;
  });

  let run = await check();
  expect(run.output).toContain("ok: every invariant holds");
  expect(run.output).toMatch(/note +5 unit\(s\) dispatched long ago wait in the outbox/);
  expect(run.output).toContain("outstanding peak 5 of 5");
  expect(run.code).toBe(0);

  // The outbox message is lost and no api reconciles: dispatched units no message can reach.
  const conn = await rawBroker();
  const ch = await conn.createChannel();
  await ch.purgeQueue(place.topology.box);
  await conn.close();
  // And a duplicate terminal event, as a broken status rule would write.
  const { id } = await db.db.selectFrom("units").select("id").where("status", "=", "dispatched").orderBy("id").limit(1).executeTakeFirstOrThrow();
  await sql`INSERT INTO unit_events (unit_id, attempt, status, at, source) VALUES (${id}, 1, 'success', now(), 'test'), (${id}, 1, 'success', now(), 'test')`.execute(db.db);

  run = await check();
  expect(run.output).toMatch(/VIOLATION +dispatched_without_message: .* \(5; e\.g\. units /);
  expect(run.output).toMatch(new RegExp(`VIOLATION +at_most_one_terminal_per_attempt: .* \\(1; e\\.g\\. units ${id}\\)`));
  expect(run.code).toBe(1);

  const json = await check("--json", "--expect-done");
  const report = JSON.parse(json.output);
  expect(report.ok).toBe(false);
  expect(report.violations.map((v: { rule: string }) => v.rule).sort()).toEqual(["at_most_one_terminal_per_attempt", "dispatched_without_message", "not_done"]);
  expect(json.code).toBe(1);
});

it("refuses a bad flag with exit code 2, naming it", async () => {
  const run = await check("--sample", "soon");
  expect(run.output).toContain('--sample="soon": expected a non-negative number');
  expect(run.code).toBe(2);
});
