import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openTestDb, outage, outagesSettled, startBusyRun, useTestPlace, waitFor, type System } from "@rtb/testing";
import type { DbHandle } from "@rtb/db";

/**
 * PostgreSQL goes away for a few seconds in the middle of a run (a real server, the project's own,
 * stopped and started again: server-control.ts). The api says so on /readyz, keeps status reports unacked
 * in the broker meanwhile, does not crash (it runs in this test's process: an unhandled
 * 'error' would fail the run), and the run completes with every rule kept.
 */
const UNITS = 300;
const MAX_QUEUE = 20;
const DOWN_MS = 5_000;

const place = useTestPlace({ perTest: true });
let h: DbHandle;

beforeEach(() => {
  h = place.own(openTestDb(place));
  // This file's own pool (the sampler's) must survive the restart: a client checked out
  // (between acquire and query) when PostgreSQL terminates it emits 'error', and pg-pool
  // listens only on idle ones. The api's pool gets no such help: it must cope by itself.
  h.pool.on("connect", (client) => client.on("error", () => {}));
});
afterEach(async () => {
  // A failed or timed-out test may still be in its outage: the database must be back before the
  // place's teardown (registered first, so it runs after this hook) stops the run and drops it.
  await outagesSettled();
});

async function readyz(system: System) {
  const res = await system.api.app.request("/readyz");
  return { status: res.status, body: (await res.json()) as { ready: boolean; database: boolean; broker: boolean; inbox: boolean } };
}

describe("a PostgreSQL restart in the middle of a run", () => {
  it("makes the api not ready while it lasts; then the run completes and every rule holds", async () => {
    const run = place.own(await startBusyRun(place, h.db, { units: UNITS, maxQueue: MAX_QUEUE }));
    const s = run.system;

    let notReady: Awaited<ReturnType<typeof readyz>> | undefined;
    const report = await outage("database", {
      downMs: DOWN_MS,
      whileDown: async () => {
        notReady = await waitFor("/readyz to report the database down", async () => {
          const r = await readyz(s);
          return r.status === 503 && !r.body.database ? r : null;
        }, 10_000);
      },
    });

    // While PostgreSQL was down: not ready, because of the database (the broker was fine).
    // (The sampler, on this file's pool, skipped its samples meanwhile: sampleOutstanding
    // tolerates the database being down.)
    // (`inbox` turns false too once the inbox has been held for 5 s.)
    expect(notReady).toMatchObject({ status: 503, body: { ready: false, database: false, broker: true } });

    // Back up: ready again, without any help.
    const ready = await waitFor("/readyz to report ready again", async () => {
      const r = await readyz(s);
      return r.status === 200 ? r : null;
    }, 60_000);
    expect(ready.body).toEqual({ ready: true, database: true, broker: true, inbox: true });

    // The run completes and every rule holds. Work went on after the restart: units reached
    // their terminal status once PostgreSQL was back (nothing can be recorded while it is down,
    // so: after it went down). Reports that arrived meanwhile waited in the inbox and were all
    // applied; none of the jobs (the broker was untouched) was recorded as lost.
    const final = await run.settle(report.downAt);
    console.log(
      `database outage (${report.how}): stopping ${report.stoppingMs} ms, down ${report.downMs} ms, starting ${report.startingMs} ms; ` +
        `${run.underWay.counts.success + run.underWay.counts.error}/${UNITS} units done when it began; ${run.sampler.samples} samples; ` +
        `re-published ${final.publishes.republished}, ignored reports ${JSON.stringify(final.reports.ignored)}`,
    );
  });
});
