import { sql } from "kysely";
import { expect } from "vitest";
import { checkSystem, loadApiConfig, sampleOutstanding, type CheckReport } from "@rtb/api";
import { statusList, unitsKeptAndPruned, type Db } from "@rtb/db";
import { OUTCOMES } from "@rtb/protocol";
import { connect } from "amqplib";
import { brokerUrlOf, type Broker } from "@rtb/runtime";
import { waitFor, type TestPlace } from "./fixtures.ts";
import { startSystem, type System } from "./system.ts";

/**
 * The end of a test run, checked the way an operator checks a live system: with the product's
 * own sampler and checker (services/api/src/check.ts, `npm run check`), plus what a finished
 * test run must show on top of it.
 */

/** The product's sampler of outstanding (dispatched + queued) units: `sampleOutstanding(db, everyMs)`. */
export type Sampler = ReturnType<typeof sampleOutstanding>;

export interface FinishedRun {
  db: Db;
  /** A broker on the run's names (an in-process api's, or one of the test's own). */
  broker: Broker;
  /** The api's environment: RTB_BROADCAST_MAX_QUEUE and the timeouts are read from it. */
  env: Record<string, string>;
  /** Sampled since before /go; stopped here, and its peak given to the checker. */
  sampler: Sampler;
  /** Units seeded (and enqueued by the test): in the table, or pruned by retention. */
  total: number;
  /** Units the test cancelled (default 0): the rest must end success or error. */
  cancelled?: number;
}

/**
 * After every unit is terminal: wait for the outbox, the job queue and the inbox to hold no
 * ready message (duplicates from a fault are worked off), then run `checkSystem` expecting the
 * run done, with the sampler's peak. No rule broken (timelines, nothing stuck, the bound), every
 * seeded unit success or error (or cancelled, as many as the test cancelled), nothing
 * dead-lettered (the checker only notes dead letters).
 */
export async function expectRunSettled(run: FinishedRun): Promise<CheckReport> {
  const { db, broker, sampler } = run;
  const t = broker.topology;
  await waitFor(
    "the outbox, the job queue and the inbox to hold no ready message",
    async () => (await Promise.all([t.box, t.jobQueue("simulate"), t.inbox].map((q) => broker.inspectQueue(q)))).every((q) => q?.messages === 0),
    30_000,
    100,
  );
  await sampler.stop();
  const config = loadApiConfig(run.env);
  const report = await checkSystem({
    db,
    broker,
    maxQueue: config.RTB_BROADCAST_MAX_QUEUE,
    dispatchTimeoutMs: config.RTB_DISPATCH_TIMEOUT_MS,
    processingTimeoutMs: config.RTB_PROCESSING_TIMEOUT_MS,
    observedPeak: sampler.peak,
    expectDone: true,
  });
  expect(report.violations).toEqual([]);
  expect(sampler.samples).toBeGreaterThan(0);
  // Units retention pruned (finished ones only) are gone from the table: with those, every
  // unit is there, and every unit there is terminal. The cancelled count is exact while
  // nothing was pruned (a pruned unit may have been a cancelled one).
  // Retention goes on meanwhile: units that finished last (a workflow's last steps, say) may be
  // pruned between the checker's count and this one, which reads the table and the pruned total
  // in one snapshot. Pruning only removes: the two counts are equal while nothing was pruned.
  const { kept, pruned } = await unitsKeptAndPruned(db);
  if (pruned === 0) expect(kept).toBe(report.total);
  else expect(kept).toBeLessThanOrEqual(report.total);
  expect(kept + pruned).toBe(run.total);
  expect(report.counts.success + report.counts.error + report.counts.cancelled).toBe(report.total);
  if (pruned === 0) expect(report.counts.cancelled).toBe(run.cancelled ?? 0);
  else expect(report.counts.cancelled).toBeLessThanOrEqual(run.cancelled ?? 0);
  if (report.queues.dead?.messages) {
    // Say why, so that a failure names the queue and the reason (rejected, delivery_limit, ...).
    expect(report.queues.dead, `dead letters: ${JSON.stringify(await deadLetters(run.env, t.dead))}`).toMatchObject({ messages: 0 });
  }
  return report;
}

/**
 * Up to 50 messages of the dead-letter queue, handed back unsettled: where each died, why, how
 * often, and what it was. Tried on each broker host in turn (a cluster test may have lost one).
 */
async function deadLetters(env: Record<string, string>, queue: string): Promise<unknown[]> {
  const c = loadApiConfig(env);
  for (const at of c.RTB_BROKER_HOST) {
    const conn = await connect(brokerUrlOf(c, at)).catch(() => null);
    if (!conn) continue;
    try {
      const ch = await conn.createChannel();
      const seen: unknown[] = [];
      for (let i = 0; i < 50; i++) {
        const m = await ch.get(queue, { noAck: false });
        if (!m) break;
        const h = m.properties.headers ?? {};
        const death = (h["x-death"] as { count?: number; reason?: string; queue?: string }[] | undefined)?.[0];
        seen.push({
          queue: h["x-first-death-queue"],
          reason: h["x-first-death-reason"],
          deaths: death?.count,
          deliveries: h["x-delivery-count"],
          messageId: m.properties.messageId,
          type: m.properties.type,
          body: m.content.toString("utf8").slice(0, 200),
        });
      }
      return seen;
    } catch (err) {
      return [`cannot read ${queue}: ${(err as Error).message}`];
    } finally {
      await conn.close().catch(() => {});
    }
  }
  return ["no broker host answered"];
}

/** A run under way on an in-process system, for the tests that restart a server in the middle of one. */
export interface BusyRun {
  readonly system: System;
  readonly sampler: Sampler;
  /** GET / once the run was under way (`minDone` units finished). */
  readonly underWay: any;
  /**
   * Wait for every unit to finish, then `expectRunSettled`, and: the sampler kept sampling
   * (over 20 samples), no job was recorded as lost, and units reached their terminal status
   * after `workedAfter` (ms since the epoch). Returns the final GET /.
   */
  settle(workedAfter: number): Promise<any>;
  /** Stop the sampler and the system (idempotent; for afterEach). */
  stop(): Promise<void>;
}

/**
 * Start an api, a leader and two agents in this process with `units` seeded and the outbox
 * bounded to `maxQueue`, sample the outstanding units on `db`, call /go and wait until
 * `minDone` units have finished, so that plenty of work is left when the test strikes.
 */
export async function startBusyRun(place: TestPlace, db: Db, opts: { units: number; maxQueue: number; minDone?: number }): Promise<BusyRun> {
  const { units, maxQueue, minDone = 20 } = opts;
  const env = {
    RTB_SEED_UNITS: String(units),
    RTB_BROADCAST_MAX_QUEUE: String(maxQueue),
    RTB_AGENT_WORK_MIN_MS: "5",
    RTB_AGENT_WORK_MAX_MS: "30",
    RTB_RETRY_BACKOFF_MS: "10",
    RTB_DISPATCH_TIMEOUT_MS: "3000",
  };
  const system = await startSystem(place, env);
  const sampler = sampleOutstanding(db);
  const stop = async () => {
    await sampler.stop();
    await system.stop();
  };
  let underWay: any;
  try {
    expect((await system.get("/")).counts.pending).toBe(units);
    expect(await system.get("/go")).toMatchObject({ dispatching: true });
    underWay = await waitFor(`${minDone} units to finish`, async () => {
      const st = await system.get("/");
      return st.counts.success + st.counts.error >= minDone ? st : null;
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    system,
    sampler,
    underWay,
    stop,
    async settle(workedAfter) {
      const final = await waitFor(
        "every unit to finish after the outage",
        async () => {
          const st = await system.get("/").catch(() => null);
          return st?.done ? st : null;
        },
        120_000,
      );
      expect(sampler.samples).toBeGreaterThan(20);
      await expectRunSettled({ db, broker: system.api.broker, env: { ...place.env, ...env }, sampler, total: units });
      // No job was lost (the queues are durable, the messages persistent; reports that waited in
      // the inbox are late, not missing): none may be recorded as lost.
      const lost = await sql<{ unit_id: number; attempt: number; detail: unknown }>`
        SELECT unit_id, attempt, detail FROM unit_events WHERE source = 'reconciler' AND detail->>'message' LIKE 'job lost%'`.execute(db);
      expect(lost.rows).toEqual([]);
      // Work went on after the outage.
      const { rows } = await sql<{ n: number }>`
        SELECT count(*)::int AS n FROM unit_events WHERE status IN ${statusList(OUTCOMES)} AND recorded_at > ${new Date(workedAfter)}`.execute(db);
      expect(rows[0]!.n).toBeGreaterThan(0);
      return final;
    },
  };
}
