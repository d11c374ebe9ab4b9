/**
 * `npm run bench:backlog`: how dispatch scales with the backlog. It builds a backlog of its
 * own through the api's batch endpoint (POST /units, over HTTP), then times the calls whose
 * cost must not grow with that backlog, and prints p50/p99 over repeated calls:
 *
 * - enqueue: units per second through POST /units (batches of --batch, --concurrency at once);
 * - GET /next?limit=50 (the preview), over HTTP;
 * - a top-up of 50 (claimTopUp: the database side of dispatch, which is what scales);
 * - GET / (counts per status), over HTTP.
 *
 * With --delayed N, N delayed units (due in a day to half a year) are added to the last size
 * and it is measured again: a row "+ N delayed", whose figures must match the row before (the
 * units on a clock sit in an index of their own, which a top-up reads up to now: nothing);
 * with --plans the plans are taken there, and show that index read.
 *
 * With --sizes it grows one backlog through each size in turn and prints a row per size (the
 * units the top-ups took are put back before the next size, so each row starts from exactly
 * that many pending units). With --plans it also prints the plans of the dispatch statements
 * at the last size. It works in a database and under broker names of its own (rtb_bench_<id>,
 * bench.<id>.), dropped at the end unless --keep; --db measures a database that --keep left,
 * with the backlog it has (no enqueue). The servers are the ones RTB_DB_* and RTB_BROKER_* name.
 *
 *   npm run bench:backlog                                  # 1,000,000 units over 1,000 groups
 *   npm run bench:backlog -- --sizes 10000,100000,1000000  # a row per size, one run
 *   npm run bench:backlog -- --units 100000 --reps 50      # quicker
 *   npm run bench:backlog -- --units 100000 --delayed 1000000 --plans  # a million delayed units cost nothing
 */
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { loadApiConfig, startApiService } from "@rtb/api";
import { sql } from "kysely";
import { claimTopUp, compactTallies, explainDispatch, type Db } from "@rtb/db";
import { createLogger } from "@rtb/runtime";
import { scratchPlace } from "./scratch-place.ts";

const flags = {
  units: { type: "string" },
  sizes: { type: "string" },
  delayed: { type: "string", default: "0" },
  groups: { type: "string", default: "1000" },
  priorities: { type: "string", default: "3" },
  batch: { type: "string", default: "10000" },
  concurrency: { type: "string", default: "2" },
  reps: { type: "string", default: "100" },
  db: { type: "string" },
  plans: { type: "boolean", default: false },
  keep: { type: "boolean", default: false },
  help: { type: "boolean", default: false },
} as const;

const usage =
  "usage: npm run bench:backlog -- [--units N | --sizes N,N,...] [--delayed N] [--groups N] [--priorities N] [--batch N] [--concurrency N] [--reps N] [--plans] [--keep] [--db NAME]\n" +
  "  --units N        build a backlog of N units (default 1000000)\n" +
  "  --sizes N,N,...  grow one backlog through each size, a row of figures per size\n" +
  "  --delayed N      then add N delayed units (due in a day to half a year) and measure again\n" +
  "  --db NAME        measure an existing database (left by --keep) as it is, without enqueueing";

let opts: { sizes: number[]; delayed: number; groups: number; priorities: number; batch: number; concurrency: number; reps: number; plans: boolean; keep: boolean; db: string | undefined };
try {
  const { values: v } = parseArgs({ options: flags });
  if (v.help) {
    console.log(usage);
    process.exit(0);
  }
  const int = (name: string, value: string | undefined, min: number) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name}="${String(value)}": expected an integer >= ${min}`);
    return n;
  };
  if (v.units !== undefined && v.sizes !== undefined) throw new Error("--units and --sizes: give one of them");
  if (v.db !== undefined && (v.units !== undefined || v.sizes !== undefined || v.delayed !== "0")) throw new Error("--db measures the backlog that database has: no --units, --sizes or --delayed");
  if (v.db !== undefined && !/^[a-z_][a-z0-9_]*$/.test(v.db)) throw new Error(`--db="${v.db}": expected a database name (lower case letters, digits, _)`);
  const sizes = v.sizes !== undefined ? v.sizes.split(",").map((s) => int("sizes", s.trim(), 1)) : [int("units", v.units ?? "1000000", 1)];
  if (sizes.some((s, i) => i > 0 && s <= sizes[i - 1]!)) throw new Error(`--sizes=${v.sizes}: expected increasing sizes`);
  opts = {
    sizes,
    delayed: int("delayed", v.delayed, 0),
    groups: int("groups", v.groups, 1),
    priorities: int("priorities", v.priorities, 1),
    batch: int("batch", v.batch, 1),
    concurrency: int("concurrency", v.concurrency, 1),
    reps: int("reps", v.reps, 1),
    plans: v.plans,
    keep: v.keep,
    db: v.db,
  };
} catch (err) {
  console.error(`rtb bench:backlog: ${(err as Error).message}\n${usage}`);
  process.exit(2);
}

const place = scratchPlace("bench");
const { servers, prefix } = place;
const dbName = opts.db ?? place.dbName;
const say = (msg: string) => console.log(`[bench] ${msg}`);
const DAY_MS = 86_400_000;

const config = loadApiConfig({
  ...process.env,
  RTB_DB_NAME: dbName,
  RTB_BROKER_PREFIX: prefix,
  RTB_API_HOST: "127.0.0.1:0",
  RTB_SEED_UNITS: "0",
  RTB_BROADCAST_MAX_QUEUE: "100000",
  RTB_API_MAX_BATCH: String(Math.max(opts.batch, 1)),
  RTB_RECONCILE_CRON: "0 0 1 1 *",
  RTB_LOG_LEVEL: "warn",
});
const api = await startApiService(config, createLogger({ service: "api", level: "warn", format: "pretty" }), { listen: true });
const base = `http://127.0.0.1:${api.address!.port}`;
const db = api.database.db;

interface Row {
  pending: number;
  delayed: number;
  enqueue: string;
  next50: number[];
  topUp: number[];
  state: number[];
}

try {
  const rows: Row[] = [];
  let plans: string[] = [];
  let enqueued = 0;
  // Groups of different sizes (a few big customers, many small ones), like real traffic; the
  // same spread at every size.
  const spread = opts.sizes[opts.sizes.length - 1]!;
  const sizes = opts.db ? [await pendingNow(db)] : opts.sizes;
  for (const size of sizes) {
    let enqueue = "(existing backlog)";
    if (!opts.db) {
      const add = size - enqueued;
      say(`enqueueing ${add.toLocaleString("en")} units (to ${size.toLocaleString("en")}) over ${opts.groups} groups and ${opts.priorities} priorities (POST /units, ${opts.batch} per request, ${opts.concurrency} at once)`);
      const { seconds, batchTimes, folds } = await enqueueUnits(enqueued, size, spread);
      enqueued = size;
      enqueue = `${Math.round(add / seconds).toLocaleString("en")} units/s (${seconds.toFixed(1)} s; per request p50 ${pct(batchTimes, 50)} ms)`;
      if (folds.length > 0) say(`folding the tallies once a second during the load: ${folds.length} folds, p50 ${pct(folds, 50)} ms, max ${pct(folds, 100)} ms`);
    }
    // The deltas of the load folded, then fresh statistics and no dead rows, as the dispatcher
    // and autovacuum would leave them soon after (this CI server runs with autovacuum off).
    // INDEX_CLEANUP on: the tally tables' dead space is then given back (truncated).
    await compactTallies(db);
    await sql`VACUUM (ANALYZE, INDEX_CLEANUP ON) units, unit_groups, ready_deltas, ready_counts, ready_levels, status_tallies`.execute(db);
    say(`measuring at ${size.toLocaleString("en")} pending units`);
    const last = size === sizes[sizes.length - 1];
    rows.push({ pending: size, delayed: 0, enqueue, ...(await measure()) });
    // In the steady state the measurement left: the last top-up's units in flight, tallies as folded.
    if (opts.plans && last && opts.delayed === 0) plans = await explainDispatch(db, 50);
    await putBack();
    if (last && opts.delayed > 0) {
      say(`enqueueing ${opts.delayed.toLocaleString("en")} delayed units, due in a day to half a year`);
      const { seconds } = await enqueueUnits(enqueued, enqueued + opts.delayed, spread, { delayed: true });
      await compactTallies(db);
      await sql`VACUUM (ANALYZE, INDEX_CLEANUP ON) units, unit_groups, ready_deltas, ready_counts, ready_levels, status_tallies`.execute(db);
      say(`measuring at ${size.toLocaleString("en")} ready units + ${opts.delayed.toLocaleString("en")} delayed`);
      const delayedEnqueue = `${Math.round(opts.delayed / seconds).toLocaleString("en")} units/s (delayed)`;
      rows.push({ pending: size, delayed: opts.delayed, enqueue: delayedEnqueue, ...(await measure()) });
      if (opts.plans) plans = await explainDispatch(db, 50);
      await putBack();
    }
  }

  console.log("");
  console.log(`${opts.groups.toLocaleString("en")} groups, ${opts.priorities} priorities, ${opts.reps} calls per figure (PostgreSQL ${servers.RTB_DB_HOST.host}:${servers.RTB_DB_HOST.port}, ${dbName})`);
  console.log("| ready units | + delayed | enqueue (POST /units) | GET /next?limit=50 p50 / p99 | top-up of 50 p50 / p99 | GET / p50 / p99 |");
  console.log("| --- | --- | --- | --- | --- | --- |");
  for (const r of rows) {
    const fig = (t: number[]) => `${pct(t, 50)} / ${pct(t, 99)} ms`;
    console.log(`| ${r.pending.toLocaleString("en")} | ${r.delayed.toLocaleString("en")} | ${r.enqueue} | ${fig(r.next50)} | ${fig(r.topUp)} | ${fig(r.state)} |`);
  }

  if (plans.length > 0) {
    const at = `${sizes[sizes.length - 1]!.toLocaleString("en")} ready units${opts.delayed > 0 ? ` and ${opts.delayed.toLocaleString("en")} delayed` : ""}`;
    console.log(`\nplans of the dispatch statements at ${at} (EXPLAIN ANALYZE of the generic plans the services keep, in a transaction rolled back):`);
    for (const line of plans) console.log(`  ${line}`);
  }
} finally {
  await api.stop();
  if (opts.db) {
    await place.drop().catch(() => {});
  } else if (!opts.keep) {
    await place.drop();
  } else {
    say(`kept database ${dbName} (measure it again with --db ${dbName}) and broker names ${prefix}*`);
  }
}

/**
 * POST units number `from` to `to` - 1, in batches; the seconds it took and each request's ms.
 * Meanwhile the tallies are folded every second (as the dispatcher does), timed: the fold must
 * keep up with the load.
 */
async function enqueueUnits(from: number, to: number, spread: number, how: { delayed?: boolean } = {}): Promise<{ seconds: number; batchTimes: number[]; folds: number[] }> {
  let next = from;
  const t0 = performance.now();
  const batchTimes: number[] = [];
  const folds: number[] = [];
  let loading = true;
  const folding = (async () => {
    while (loading) {
      await new Promise((r) => setTimeout(r, 1_000));
      const started = performance.now();
      await compactTallies(db);
      folds.push(performance.now() - started);
    }
  })();
  async function producer() {
    while (next < to) {
      const first = next;
      const n = Math.min(opts.batch, to - first);
      next += n;
      const body = JSON.stringify(
        Array.from({ length: n }, (_, i) => {
          const k = first + i;
          const group = `customer-${Math.floor(opts.groups * Math.pow(((k * 7919) % spread) / spread, 2))}`;
          const unit = { kind: "simulate", group, priority: k % opts.priorities, payload: { n: k } };
          // Due in a day to half a year, spread over that time.
          return how.delayed ? { ...unit, delayMs: DAY_MS + ((k * 7919) % 180) * DAY_MS + (k % 1000) * 1000 } : unit;
        }),
      );
      const started = performance.now();
      const res = await fetch(`${base}/units`, { method: "POST", headers: { "content-type": "application/json" }, body });
      if (res.status !== 201) throw new Error(`POST /units answered ${res.status}: ${(await res.text()).slice(0, 300)}`);
      await res.arrayBuffer();
      batchTimes.push(performance.now() - started);
    }
  }
  await Promise.all(Array.from({ length: opts.concurrency }, producer));
  const seconds = (performance.now() - t0) / 1000;
  loading = false;
  await folding;
  return { seconds, batchTimes, folds };
}

/** GET /next?limit=50 and GET / while paused, then top-ups of 50 in the steady state. */
async function measure(): Promise<{ next50: number[]; topUp: number[]; state: number[] }> {
  const http = (path: string) => async () => {
    const res = await fetch(`${base}${path}`, { headers: { accept: "application/json" } });
    if (res.status !== 200) throw new Error(`GET ${path} answered ${res.status}`);
    await res.arrayBuffer();
  };
  await fetch(`${base}/pause`, { method: "POST" });
  await compactTallies(db);
  const next50 = await timed(opts.reps, http("/next?limit=50"));
  const state = await timed(opts.reps, http("/"));
  // A top-up of 50 (the claim in PostgreSQL; the publish that follows is the broker's cost),
  // with room for 100 as if 50 were queued and 50 had just finished.
  await db.updateTable("control").set({ dispatching: true }).execute();
  // The steady state: 50 units in flight finish between two top-ups, so each top-up has room
  // for 50 (untimed: that is the inbox's work), and the dispatcher folds the tallies every second.
  await claimTopUp(db, 50); // the 50 that stay queued
  let inFlight: number[] = [];
  let compacted = Date.now();
  const topUp = await timed(
    opts.reps,
    async () => {
      const claim = await claimTopUp(db, 100);
      if (claim.units.length !== 50) throw new Error(`a top-up claimed ${claim.units.length} units, not 50`);
      inFlight = claim.units.map((u) => u.unitId);
    },
    3,
    async () => {
      await db.updateTable("units").set({ status: "success" }).where("id", "in", inFlight.length ? inFlight : [0]).execute();
      if (Date.now() - compacted >= 1_000) {
        compacted = Date.now();
        await compactTallies(db);
      }
    },
  );
  return { next50, topUp, state };
}

/**
 * Put back what the top-ups took, so that the next size (or run, with --db) starts from
 * exactly its count.
 */
async function putBack(): Promise<void> {
  await db.updateTable("control").set({ dispatching: false }).execute();
  await sql`UPDATE units SET status = 'pending', attempt = 0, dispatched_at = NULL WHERE status <> 'pending'`.execute(db);
  await sql`DELETE FROM unit_events`.execute(db);
}

async function pendingNow(db: Db): Promise<number> {
  const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM units WHERE status = 'pending'`.execute(db);
  return rows[0]!.n;
}

/** Run `fn` `reps` times after `warmup` untimed runs, `between` (untimed) before each; the durations in ms. */
async function timed(reps: number, fn: () => Promise<void>, warmup = 3, between?: () => Promise<void>): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < warmup + reps; i++) {
    await between?.();
    const t = performance.now();
    await fn();
    if (i >= warmup) times.push(performance.now() - t);
  }
  return times;
}

function pct(values: number[], p: number): string {
  const sorted = [...values].sort((a, b) => a - b);
  const v = sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;
  return v < 10 ? v.toFixed(2) : v.toFixed(1);
}
