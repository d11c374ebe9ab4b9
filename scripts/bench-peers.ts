/**
 * The peers `npm run bench -- --peers` measures beside rtb, with as many no-op jobs as rtb has
 * units: BullMQ on Redis (one Worker) and pg-boss on rtb's PostgreSQL, in a database of its
 * own. Every job is queued first and the clock starts when the workers do, as rtb's units are
 * enqueued before GET /go; it stops at the last job completed. Both run in this process,
 * which does nothing else meanwhile. The rounds go round-robin (rtb, BullMQ, pg-boss, rtb, ...)
 * so that a machine that gets busier part way through weighs on every system alike.
 */
import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";
import { Queue, Worker } from "bullmq";
import { Redis } from "ioredis";
import pg from "pg";
import PgBoss from "pg-boss";
import { connectionOptions } from "@rtb/db";
import { running } from "./bench-interrupt.ts";
import { runOnce, type BenchSettings, type RunResult } from "./bench-run.ts";
import { scratchPlace } from "./scratch-place.ts";

export interface PeerSettings {
  rounds: number;
  redisUrl: string;
  bullmqConcurrency: number;
  pgbossWorkers: number;
  pgbossBatch: number;
}

export interface PeerResult {
  /** pg-boss's database, BullMQ's key prefix: dropped afterwards, unless --keep. */
  place: string;
  jobs: number;
  /** From the workers' start to the last job completed. */
  seconds: number;
  jobsPerSec: number;
}

/** What the peers' rounds measured, filled in as they go (a failure leaves what came before). */
export interface PeerRounds {
  settings: PeerSettings;
  versions: { bullmq: string; pgboss: string };
  /** Why BullMQ was not run (no Redis), or null. */
  bullmqSkipped: string | null;
  bullmq: PeerResult[];
  pgboss: PeerResult[];
}

/** Jobs per addBulk or insert call: one round trip and one JSON parameter of reasonable size. */
export const PEER_CHUNK = 1_000;
/** pg-boss's shortest polling interval: a worker that got a batch sleeps the rest of it. */
export const PGBOSS_POLL_S = 0.5;

const version = (pkg: string) => (createRequire(import.meta.url)(`${pkg}/package.json`) as { version: string }).version;

export function peerRounds(settings: PeerSettings): PeerRounds {
  return { settings, versions: { bullmq: version("bullmq"), pgboss: version("pg-boss") }, bullmqSkipped: null, bullmq: [], pgboss: [] };
}

/** `--rounds` rounds of rtb (into `rtb`, one run a round), BullMQ and pg-boss (into `out`), on `--units` each. */
export async function runRounds(s: BenchSettings, out: PeerRounds, rtb: RunResult[], say: (msg: string) => void): Promise<void> {
  const p = out.settings;
  const jobs = s.sizes[0]!;
  out.bullmqSkipped = await redisMissing(p.redisUrl);
  if (out.bullmqSkipped) say(`BullMQ skipped: ${out.bullmqSkipped}`);
  for (let round = 1; round <= p.rounds; round++) {
    say(`round ${round} of ${p.rounds}: rtb`);
    rtb.push(await runOnce(s, jobs, { raw: s.raw && round === 1, say }));
    if (!out.bullmqSkipped) {
      say(`round ${round} of ${p.rounds}: BullMQ ${out.versions.bullmq}, one Worker, concurrency ${p.bullmqConcurrency}`);
      out.bullmq.push(await runBullmq(p, jobs, s, say));
    }
    say(`round ${round} of ${p.rounds}: pg-boss ${out.versions.pgboss}, ${p.pgbossWorkers} worker(s) x batch ${p.pgbossBatch}`);
    out.pgboss.push(await runPgBoss(p, jobs, s, say));
  }
}

/** The URL with its password masked, to print. */
export function shownUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString().replace(/\/$/, "");
  } catch {
    return url;
  }
}

/** Why BullMQ cannot run at `url` (nothing listening, or Redis refusing us), or null when Redis answers. */
async function redisMissing(url: string): Promise<string | null> {
  // One try, no reconnecting, no queueing of commands: an answer within seconds.
  const redis = new Redis(url, { lazyConnect: true, connectTimeout: 5_000, retryStrategy: () => null, maxRetriesPerRequest: 0, enableOfflineQueue: false });
  // connect() rejects with "Connection is closed"; the socket's own error comes as an event.
  let cause: Error | undefined;
  redis.on("error", (err: Error) => (cause ??= err));
  try {
    await redis.connect();
    await redis.ping();
    return null;
  } catch (err) {
    const e = (cause ?? err) as NodeJS.ErrnoException;
    return e.code === "ECONNREFUSED" ? `no Redis at ${shownUrl(url)} (--redis-url)` : `Redis at ${shownUrl(url)} (--redis-url): ${e.message}`;
  } finally {
    redis.disconnect();
  }
}

/**
 * Fails when `progress()` has not been called for `seconds`, as rtb's run does with
 * --stall-timeout: a peer that stopped moving ends the bench instead of hanging it.
 */
function stallGuard(what: string, seconds: number) {
  let at = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const stalled = new Promise<never>((_, reject) => {
    timer = setInterval(() => {
      if (Date.now() - at > seconds * 1000) reject(new Error(`${what}: no progress for ${seconds} s (--stall-timeout)`));
    }, 1_000);
  });
  stalled.catch(() => {});
  return {
    progress: () => void (at = Date.now()),
    within: <T>(work: Promise<T>) => Promise.race([work, stalled]),
    stop: () => clearInterval(timer),
  };
}

/**
 * Run a peer's `body`, then `stop` it and `drop` what it made; an interrupted bench does the
 * same at once. `closing()` tells the body's loops to give up, and the drop waits for the body
 * to have settled, so that nothing is added after the queue or database is gone.
 */
async function peerRun<T>(body: (closing: () => boolean) => Promise<T>, stop: () => Promise<void>, drop: () => Promise<void>): Promise<T> {
  let closing = false;
  const result = body(() => closing);
  const cleanup = async () => {
    closing = true;
    await stop().catch(() => {});
    await result.catch(() => {});
    await drop();
  };
  running.cleanups.push(cleanup);
  try {
    return await result;
  } finally {
    if (!running.interrupted) {
      running.cleanups.splice(running.cleanups.indexOf(cleanup), 1);
      await cleanup();
    }
  }
}

const interrupted = () => new Error("interrupted");

export async function runBullmq(p: PeerSettings, jobs: number, s: Pick<BenchSettings, "stallTimeoutS" | "keep">, say: (msg: string) => void): Promise<PeerResult> {
  // Keys of the run's own (BullMQ's prefix), removed with the queue afterwards.
  const prefix = `rtb-bench-${Date.now().toString(36)}${process.pid.toString(36)}`;
  const opts = { connection: { url: p.redisUrl }, prefix };
  const queue = new Queue("noop", opts);
  // BullMQ's defaults otherwise: completed jobs stay in Redis, as rtb keeps every unit's status.
  const worker = new Worker("noop", async () => {}, { ...opts, concurrency: p.bullmqConcurrency, autorun: false });
  // Both retry a lost connection themselves; an emitter's "error" with no listener would throw.
  let errors = 0;
  const onError = (err: Error) => void (errors++ < 3 && say(`BullMQ: ${err.message}`));
  queue.on("error", onError);
  worker.on("error", onError);
  const guard = stallGuard("BullMQ", s.stallTimeoutS);
  const stop = async () => {
    guard.stop();
    await worker.close(true);
  };
  const drop = async () => {
    if (s.keep) say(`kept Redis keys ${prefix}:*`);
    else await queue.obliterate({ force: true }).catch(() => {});
    await queue.close().catch(() => {});
  };
  return peerRun(async (closing) => {
    for (let from = 0; from < jobs; from += PEER_CHUNK) {
      if (closing()) throw interrupted();
      await guard.within(queue.addBulk(Array.from({ length: Math.min(PEER_CHUNK, jobs - from) }, () => ({ name: "noop", data: {} }))));
      guard.progress();
    }
    await guard.within(worker.waitUntilReady());
    if (closing()) throw interrupted();
    let completed = 0;
    const finished = new Promise<number>((resolve, reject) => {
      worker.on("completed", () => {
        guard.progress();
        if (++completed === jobs) resolve(performance.now());
      });
      worker.on("failed", (_job, err) => reject(new Error(`BullMQ: a no-op job failed: ${err.message}`)));
    });
    const started = performance.now();
    // run() settles when the worker stops: before the last job, that is a failure.
    const stopped = worker.run().then(() => Promise.reject(new Error("BullMQ: the worker stopped")));
    stopped.catch(() => {});
    const ended = await guard.within(Promise.race([finished, stopped]));
    const seconds = (ended - started) / 1000;
    say(`BullMQ: ${Math.round(jobs / seconds).toLocaleString("en")} jobs/s over ${seconds.toFixed(1)} s`);
    return { place: prefix, jobs, seconds, jobsPerSec: jobs / seconds };
  }, stop, drop);
}

export async function runPgBoss(p: PeerSettings, jobs: number, s: Pick<BenchSettings, "stallTimeoutS" | "keep">, say: (msg: string) => void): Promise<PeerResult> {
  const place = scratchPlace("pgboss");
  const pgOptions = (database: string) => connectionOptions({ ...place.servers, RTB_DB_POOL_SIZE: 1 }, database);
  // No cron (nothing here is scheduled); maintenance as pg-boss runs it by default.
  const boss = new PgBoss({ ...pgOptions(place.dbName), password: place.servers.RTB_DB_PASSWORD, schedule: false });
  const failed = new Promise<never>((_, reject) => boss.on("error", (err) => reject(new Error(`pg-boss: ${err.message}`))));
  failed.catch(() => {});
  const guard = stallGuard("pg-boss", s.stallTimeoutS);
  const stop = async () => {
    guard.stop();
    await boss.stop({ graceful: false, wait: true });
  };
  const drop = async () => {
    if (s.keep) say(`kept database ${place.dbName}`);
    else await place.drop([]);
  };
  return peerRun(async (closing) => {
    const admin = new pg.Client(pgOptions("postgres"));
    await admin.connect();
    await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(place.dbName)}`).finally(() => admin.end());
    await boss.start();
    await boss.createQueue("noop");
    for (let from = 0; from < jobs; from += PEER_CHUNK) {
      if (closing()) throw interrupted();
      await guard.within(boss.insert(Array.from({ length: Math.min(PEER_CHUNK, jobs - from) }, () => ({ name: "noop", data: {} }))));
      guard.progress();
    }
    let handled = 0;
    // Wall clock: the end is read from PostgreSQL's clock, on this machine.
    const started = Date.now();
    for (let i = 0; i < p.pgbossWorkers; i++) {
      await boss.work("noop", { batchSize: p.pgbossBatch, pollingIntervalSeconds: PGBOSS_POLL_S }, async (batch) => {
        handled += batch.length;
        guard.progress();
      });
    }
    // pg-boss completes a batch after its handler returns without waiting for it: the end is
    // the last completion committed, as the job table has it.
    const db = new pg.Client(pgOptions(place.dbName));
    // Dropping the database (an interrupted bench) ends this session; the query in progress fails.
    db.on("error", () => {});
    await db.connect();
    try {
      for (;;) {
        await guard.within(Promise.race([failed, new Promise((r) => setTimeout(r, handled < jobs ? 200 : 20))]));
        if (closing()) throw interrupted();
        if (handled < jobs) continue;
        const { rows } = await db.query<{ n: number; last: number | null }>(
          "SELECT count(*)::int AS n, (extract(epoch FROM max(completed_on)) * 1000)::float8 AS last FROM pgboss.job WHERE name = 'noop' AND state = 'completed'",
        );
        const { n, last } = rows[0]!;
        if (n < jobs || last === null) continue;
        const seconds = (last - started) / 1000;
        say(`pg-boss: ${Math.round(jobs / seconds).toLocaleString("en")} jobs/s over ${seconds.toFixed(1)} s`);
        return { place: place.dbName, jobs, seconds, jobsPerSec: jobs / seconds };
      }
    } finally {
      await db.end();
    }
  }, stop, drop);
}
