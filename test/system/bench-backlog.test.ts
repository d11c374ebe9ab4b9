import { expect, it } from "vitest";
import { runCommand, serversEnv } from "@rtb/testing";

/**
 * `npm run bench:backlog`, tiny, with delayed units: it prints a row per backlog (the ready
 * one, then with the delayed units added) and the plans of the dispatch statements there,
 * where the top-up reaches the units on a clock through their index, not by a scan. Speed is
 * not asserted; that every figure and the index read are there is.
 */
it("measures a backlog with delayed units added and shows the top-up reading them through the index", async () => {
  const env = serversEnv();
  const run = runCommand(process.execPath, ["--import", "tsx", "scripts/bench-backlog.ts", "--units", "500", "--delayed", "500", "--groups", "5", "--reps", "3", "--batch", "100", "--plans"], env);
  expect(await run.exited, run.output()).toBe(0);
  await run.closed;
  const out = run.output();
  expect(out).toMatch(/^\| 500 \| 0 \| [\d,]+ units\/s .*\| [\d.]+ \/ [\d.]+ ms \| [\d.]+ \/ [\d.]+ ms \| [\d.]+ \/ [\d.]+ ms \|$/m);
  expect(out).toMatch(/^\| 500 \| 500 \| [\d,]+ units\/s \(delayed\) \| [\d.]+ \/ [\d.]+ ms \| [\d.]+ \/ [\d.]+ ms \| [\d.]+ \/ [\d.]+ ms \|$/m);
  expect(out).toContain("plans of the dispatch statements at 500 ready units and 500 delayed");
  // The top-up's inputs release due units through the index of units on a clock.
  const topUpPlan = out.slice(out.indexOf("top-up of 50, 1."), out.indexOf("top-up of 50, 2."));
  expect(topUpPlan).toMatch(/units_retry_wait/);
  expect(topUpPlan).not.toMatch(/Seq Scan on units/);
});
