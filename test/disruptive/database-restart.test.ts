import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { sql } from "kysely";
import {
  checkInvariants,
  createTestPlace,
  destroyTestPlace,
  openTestDb,
  outage,
  outagesSettled,
  queueDepth,
  rawBroker,
  startSystem,
  waitFor,
  type OutageReport,
  type System,
  type TestPlace,
} from "@rtb/testing";
import type { DbHandle } from "@rtb/db";

/**
 * PostgreSQL goes away for a few seconds in the middle of a run (the real server, stopped and
 * started again: server-control.ts). The api says so on /readyz, keeps status reports unacked
 * in the broker meanwhile, does not crash (it runs in this test's process: an unhandled
 * 'error' would fail the run), and the run completes with every rule kept.
 */
const UNITS = 300;
const MAX_QUEUE = 20;
const DOWN_MS = 5_000;

let place: TestPlace;
let h: DbHandle;
let system: System | undefined;
let sampler: Sampler | undefined;

beforeEach(async () => {
  place = await createTestPlace();
  h = openTestDb(place);
  // This file's own pool must survive the restart: a client checked out (between acquire and
  // query) when PostgreSQL terminates it emits 'error', and pg-pool listens only on idle ones.
  // The api's pool gets no such help: it must cope by itself.
  h.pool.on("connect", (client) => client.on("error", () => {}));
});
afterEach(async () => {
  // A failed or timed-out test may still be in its outage: the database must be back first.
  await outagesSettled();
  await sampler?.stop();
  await system?.stop();
  system = sampler = undefined;
  await h.close();
  await destroyTestPlace(place);
});

interface Sampler {
  /** Outstanding (dispatched + queued) units, every 50 ms while the database answers. */
  samples: number[];
  /** Samples that failed (the database was down). */
  failed: number;
  stop(): Promise<number[]>;
}

function sampleOutstanding(db: DbHandle["db"]): Sampler {
  const s: Sampler = {
    samples: [],
    failed: 0,
    async stop() {
      running = false;
      await loop;
      return s.samples;
    },
  };
  let running = true;
  const loop = (async () => {
    while (running) {
      try {
        const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM units WHERE status IN ('dispatched','queued')`.execute(db);
        s.samples.push(rows[0]!.n);
      } catch {
        s.failed++;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return s;
}

async function readyz(system: System) {
  const res = await system.api.app.request("/readyz");
  return { status: res.status, body: (await res.json()) as { ready: boolean; database: boolean; broker: boolean } };
}

describe("a PostgreSQL restart in the middle of a run", () => {
  it("makes the api not ready while it lasts; then the run completes and every rule holds", async () => {
    system = await startSystem(place, {
      RTB_SEED_UNITS: String(UNITS),
      RTB_BROADCAST_MAX_QUEUE: String(MAX_QUEUE),
      RTB_AGENT_WORK_MIN_MS: "5",
      RTB_AGENT_WORK_MAX_MS: "30",
      RTB_RETRY_BACKOFF_MS: "10",
      RTB_DISPATCH_TIMEOUT_MS: "3000",
    });
    const s = system;
    expect((await s.get("/")).counts.pending).toBe(UNITS);
    const smp = sampleOutstanding(h.db);
    sampler = smp;
    expect(await s.get("/go")).toMatchObject({ dispatching: true });
    const before = await waitFor("some units to finish", async () => {
      const st = await s.get("/");
      return st.counts.success + st.counts.error >= 20 ? st : null;
    });

    let notReady: Awaited<ReturnType<typeof readyz>> | undefined;
    const report: OutageReport = await outage("database", {
      downMs: DOWN_MS,
      whileDown: async () => {
        notReady = await waitFor("/readyz to report the database down", async () => {
          const r = await readyz(s);
          return r.status === 503 && !r.body.database ? r : null;
        }, 10_000);
      },
    });

    // While PostgreSQL was down: not ready, because of the database (the broker was fine).
    expect(notReady).toEqual({ status: 503, body: { ready: false, database: false, broker: true } });
    expect(smp.failed).toBeGreaterThan(0);

    // Back up: ready again, without any help.
    const ready = await waitFor("/readyz to report ready again", async () => {
      const r = await readyz(s);
      return r.status === 200 ? r : null;
    }, 60_000);
    expect(ready.body).toEqual({ ready: true, database: true, broker: true });

    // The run completes.
    const final = await waitFor("every unit to finish after the restart", async () => {
      const st = await s.get("/").catch(() => null);
      return st?.done ? st : null;
    }, 120_000);
    const outstanding = await smp.stop();

    expect(final.total).toBe(UNITS);
    expect(final.counts.success + final.counts.error).toBe(UNITS);
    expect(await checkInvariants(h.db)).toEqual([]);
    expect(outstanding.length).toBeGreaterThan(20);
    expect(Math.max(...outstanding)).toBeLessThanOrEqual(MAX_QUEUE);
    // Work went on after the restart: units reached their terminal status once PostgreSQL was
    // back (nothing can be recorded while it is down, so: after it went down).
    const { rows } = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM unit_events WHERE status IN ('success','error') AND recorded_at > ${new Date(report.downAt)}`.execute(h.db);
    expect(rows[0]!.n).toBeGreaterThan(0);
    // No job was lost (the broker and its durable queues were untouched): none may be recorded
    // as lost. Reports that waited in the inbox during the outage are late, not missing.
    const lost = await sql<{ unit_id: number; attempt: number; detail: unknown }>`
      SELECT unit_id, attempt, detail FROM unit_events WHERE source = 'reconciler' AND detail->>'message' LIKE 'job lost%'`.execute(h.db);
    expect(lost.rows).toEqual([]);

    // Reports that arrived during the outage waited in the inbox and were all applied: nothing
    // is left in the broker, nothing was dead-lettered.
    const conn = await rawBroker();
    try {
      const t = place.topology;
      await waitFor("the outbox, the job queue and the inbox to drain", async () => {
        const depths = await Promise.all([t.box, t.jobQueue("simulate"), t.inbox].map((q) => queueDepth(conn, q)));
        return depths.every((d) => d === 0);
      }, 30_000);
      expect(await queueDepth(conn, t.dead)).toBe(0);
    } finally {
      await conn.close().catch(() => {});
    }
    console.log(
      `database outage (${report.how}): stopping ${report.stoppingMs} ms, down ${report.downMs} ms, starting ${report.startingMs} ms; ` +
        `${before.counts.success + before.counts.error}/${UNITS} units done when it began; ${smp.failed} samples failed; ` +
        `re-published ${final.publishes.republished}, ignored reports ${JSON.stringify(final.reports.ignored)}`,
    );
  });
});
