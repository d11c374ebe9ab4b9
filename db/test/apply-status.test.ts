import { sql } from "kysely";
import { beforeAll, expect, it } from "vitest";
import { applyStatusUpdates, claimTopUp, setDispatching, type DbHandle, type ReportedUpdate } from "@rtb/db";
import { openTestDb, useTestPlace } from "@rtb/testing";

/** What a batch of reports tells its caller, beyond the rows it writes. */
const place = useTestPlace();
let h: DbHandle;

beforeAll(() => {
  h = place.own(openTestDb(place));
});

const opts = { retryBaseMs: 1_000, retryMaxMs: 60_000 };

it("reports each attempt that ended in the batch, with its kind and time since dispatch", async () => {
  await h.db
    .insertInto("units")
    .values([0, 1, 2].map(() => ({ kind: "simulate", group_name: "g", priority: 0, payload: "{}", status: "pending" as const, max_attempts: 3 })))
    .execute();
  await setDispatching(h.db, true);
  const [a, b, c] = (await claimTopUp(h.db, 3)).units;
  // Dispatched 10 s ago, so the reports below are in the past: times later than the api's
  // clock are recorded as its now (apply-status.ts).
  await sql`UPDATE units SET dispatched_at = dispatched_at - interval '10 seconds'`.execute(h.db);
  const dispatchedAt = Date.now() - 10_000;
  const later = (s: number) => new Date(dispatchedAt + s * 1000);
  const report = (unitId: number, status: ReportedUpdate["status"], at: Date, error?: ReportedUpdate["error"]): ReportedUpdate => ({
    unitId,
    attempt: 1,
    status,
    at,
    source: "agent:t",
    ...(error ? { error } : {}),
  });
  const result = await applyStatusUpdates(
    h.db,
    [
      report(a!.unitId, "processing", later(1)),
      report(a!.unitId, "success", later(2)),
      // A retryable error ends the attempt too (the unit goes back to the backlog).
      report(b!.unitId, "error", later(3), { message: "boom", retryable: true }),
      // Still running: not finished.
      report(c!.unitId, "processing", later(1)),
    ],
    opts,
  );
  expect(result.retries).toBe(1);
  expect(result.finished.map((f) => [f.kind, f.status])).toEqual([
    ["simulate", "success"],
    ["simulate", "error"],
  ]);
  // The reports are stamped 2 s and 3 s after the dispatch.
  expect(result.finished[0]!.seconds).toBeGreaterThan(1.5);
  expect(result.finished[0]!.seconds).toBeLessThan(60);
  expect(result.finished[1]!.seconds).toBeGreaterThan(2.5);
  // A redelivered report finishes nothing a second time.
  const again = await applyStatusUpdates(h.db, [report(a!.unitId, "success", later(2))], opts);
  expect(again.finished).toEqual([]);
});
