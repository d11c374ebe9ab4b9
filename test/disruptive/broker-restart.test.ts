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
 * RabbitMQ goes away for a few seconds in the middle of a run (the real server, stopped and
 * started again: server-control.ts) and the system finishes the run as if nothing happened:
 * every unit terminal, every rule kept, the outbox never over its maximum.
 * The test queues are classic, durable, with persistent messages: they survive the restart.
 */
// More than the ~300 of the database test: `rabbitmqctl stop_app` takes a second or more, and
// the run goes on meanwhile (about 170 of 300 units finished during it here); the outage must
// land while plenty of work is left.
const UNITS = 500;
const MAX_QUEUE = 20;
const DOWN_MS = 5_000;

let place: TestPlace;
let h: DbHandle;
let system: System | undefined;
let sampler: Sampler | undefined;

beforeEach(async () => {
  place = await createTestPlace();
  h = openTestDb(place);
});
afterEach(async () => {
  // A failed or timed-out test may still be in its outage: the broker must be back first.
  await outagesSettled();
  await sampler?.stop();
  await system?.stop();
  system = sampler = undefined;
  await h.close();
  await destroyTestPlace(place);
});

interface Sampler {
  /** Outstanding (dispatched + queued) units, every 50 ms. */
  samples: number[];
  stop(): Promise<number[]>;
}

function sampleOutstanding(db: DbHandle["db"]): Sampler {
  const samples: number[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      try {
        const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM units WHERE status IN ('dispatched','queued')`.execute(db);
        samples.push(rows[0]!.n);
      } catch {
        // Not expected here (only the broker goes down); a missed sample is not a failure.
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return {
    samples,
    async stop() {
      running = false;
      await loop;
      return samples;
    },
  };
}

describe("a RabbitMQ restart in the middle of a run", () => {
  it("is survived by the api, the leader and the agents: every unit finishes, every rule holds", async () => {
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
    sampler = sampleOutstanding(h.db);
    expect(await s.get("/go")).toMatchObject({ dispatching: true });
    await waitFor("some units to finish", async () => {
      const { counts } = await s.get("/");
      return counts.success + counts.error >= 20;
    });

    let whileDown: { state: any; ready: { status: number; body: any } } | undefined;
    const report: OutageReport = await outage("broker", {
      downMs: DOWN_MS,
      whileDown: async () => {
        const state = await waitFor("GET / to report the broker disconnected", async () => {
          const st = await s.get("/");
          return st.broker.connected === false ? st : null;
        }, 10_000);
        const res = await s.api.app.request("/readyz");
        whileDown = { state, ready: { status: res.status, body: await res.json() } };
      },
    });

    // While RabbitMQ was down: the api saw it, said so, and the run was not over.
    expect(whileDown).toBeDefined();
    expect(whileDown!.state.broker.connected).toBe(false);
    expect(whileDown!.state.done).toBe(false);
    expect(whileDown!.ready).toEqual({ status: 503, body: { ready: false, database: true, broker: false } });

    // Back up: the api reconnected on its own.
    const reconnected = await waitFor("the api to reconnect to the broker", async () => {
      const st = await s.get("/");
      return st.broker.connected && st.broker.reconnects > 0 ? st : null;
    }, 60_000);
    expect(reconnected.broker.reconnects).toBeGreaterThanOrEqual(1);
    expect((await s.api.app.request("/readyz")).status).toBe(200);

    // The leader and both agents reconnected too: every connection was closed by the restart,
    // so a consumer on the outbox (the leader), on jobs.simulate (the agents) and on the inbox
    // (the api) now is one they set up again on a new connection.
    let final: any;
    const conn = await rawBroker();
    try {
      const consumers = async (queue: string) => {
        const ch = await conn.createChannel();
        ch.on("error", () => {});
        try {
          return (await ch.checkQueue(queue)).consumerCount;
        } finally {
          await ch.close().catch(() => {});
        }
      };
      const t = place.topology;
      await waitFor("the leader, both agents and the api to consume again", async () => {
        const [outbox, jobs, inbox] = await Promise.all([consumers(t.box), consumers(t.jobQueue("simulate")), consumers(t.inbox)]);
        return outbox === 1 && jobs === 2 && inbox === 1;
      }, 60_000);

      // The run completes.
      final = await waitFor("every unit to finish after the restart", async () => {
        const st = await s.get("/");
        return st.done ? st : null;
      }, 120_000);
      const outstanding = await sampler.stop();

      expect(final.total).toBe(UNITS);
      expect(final.counts.success + final.counts.error).toBe(UNITS);
      expect(await checkInvariants(h.db)).toEqual([]);
      expect(outstanding.length).toBeGreaterThan(20);
      expect(Math.max(...outstanding)).toBeLessThanOrEqual(MAX_QUEUE);
      // Nothing left behind in the broker (a job duplicated by the restart may still be on its
      // way through an agent, so wait for the queues to drain), and nothing dead-lettered.
      await waitFor("the outbox, the job queue and the inbox to drain", async () => {
        const depths = await Promise.all([t.box, t.jobQueue("simulate"), t.inbox].map((q) => queueDepth(conn, q)));
        return depths.every((d) => d === 0);
      }, 30_000);
      expect(await queueDepth(conn, t.dead)).toBe(0);
      // No job was lost (durable queues, persistent messages): none may be recorded as lost.
      const lost = await sql<{ unit_id: number; attempt: number; detail: unknown }>`
        SELECT unit_id, attempt, detail FROM unit_events WHERE source = 'reconciler' AND detail->>'message' LIKE 'job lost%'`.execute(h.db);
      expect(lost.rows).toEqual([]);
      // Work went on after the restart: units reached their terminal status once RabbitMQ answered again.
      const { rows } = await sql<{ n: number }>`
        SELECT count(*)::int AS n FROM unit_events WHERE status IN ('success','error') AND recorded_at > ${new Date(report.upAt)}`.execute(h.db);
      expect(rows[0]!.n).toBeGreaterThan(0);
    } finally {
      await conn.close().catch(() => {});
    }
    console.log(
      `broker outage (${report.how}): stopping ${report.stoppingMs} ms, down ${report.downMs} ms, starting ${report.startingMs} ms; ` +
        `at the outage ${whileDown!.state.counts.success + whileDown!.state.counts.error}/${UNITS} units done; api reconnects ${reconnected.broker.reconnects}; ` +
        `re-published ${final.publishes.republished}, ignored reports ${JSON.stringify(final.reports.ignored)}`,
    );
  });
});
