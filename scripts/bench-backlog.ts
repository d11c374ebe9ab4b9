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
 * With --plans it also prints the query plan of the dispatch-order query. It works in a
 * database and under broker names of its own (rtb_bench_<id>, bench.<id>.), dropped at the
 * end unless --keep. The servers are the ones RTB_DB_* and RTB_BROKER_* name.
 *
 *   npm run bench:backlog                                  # 1,000,000 units over 1,000 groups
 *   npm run bench:backlog -- --units 100000 --reps 50      # quicker
 */
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { loadApiConfig, startApiService } from "@rtb/api";
import { sql } from "kysely";
import { claimTopUp, compactTallies, explainNextInLine } from "@rtb/db";
import { createLogger } from "@rtb/runtime";
import { scratchPlace } from "./scratch-place.ts";

const flags = {
  units: { type: "string", default: "1000000" },
  groups: { type: "string", default: "1000" },
  priorities: { type: "string", default: "3" },
  batch: { type: "string", default: "10000" },
  concurrency: { type: "string", default: "2" },
  reps: { type: "string", default: "100" },
  plans: { type: "boolean", default: false },
  keep: { type: "boolean", default: false },
  help: { type: "boolean", default: false },
} as const;

let opts: { units: number; groups: number; priorities: number; batch: number; concurrency: number; reps: number; plans: boolean; keep: boolean };
try {
  const { values: v } = parseArgs({ options: flags });
  if (v.help) {
    console.log("usage: npm run bench:backlog -- [--units N] [--groups N] [--priorities N] [--batch N] [--concurrency N] [--reps N] [--plans] [--keep]");
    process.exit(0);
  }
  const num = (name: keyof typeof flags, min: number) => {
    const n = Number(v[name]);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name}="${String(v[name])}": expected an integer >= ${min}`);
    return n;
  };
  opts = {
    units: num("units", 1),
    groups: num("groups", 1),
    priorities: num("priorities", 1),
    batch: num("batch", 1),
    concurrency: num("concurrency", 1),
    reps: num("reps", 1),
    plans: v.plans,
    keep: v.keep,
  };
} catch (err) {
  console.error(`rtb bench:backlog: ${(err as Error).message}`);
  process.exit(2);
}

const place = scratchPlace("bench");
const { servers, dbName, prefix } = place;
const say = (msg: string) => console.log(`[bench] ${msg}`);

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

try {
  // ---- enqueue through the batch endpoint ----------------------------------------------
  say(`enqueueing ${opts.units.toLocaleString("en")} units over ${opts.groups} groups and ${opts.priorities} priorities (POST /units, ${opts.batch} per request, ${opts.concurrency} at once)`);
  let next = 0;
  const t0 = performance.now();
  const batchTimes: number[] = [];
  async function producer() {
    while (next < opts.units) {
      const from = next;
      const n = Math.min(opts.batch, opts.units - from);
      next += n;
      const body = JSON.stringify(
        Array.from({ length: n }, (_, i) => {
          const k = from + i;
          // Groups of different sizes (a few big customers, many small ones), like real traffic.
          const group = `customer-${Math.floor(opts.groups * Math.pow((k * 7919) % opts.units / opts.units, 2))}`;
          return { kind: "simulate", group, priority: k % opts.priorities, payload: { n: k } };
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
  const enqueueS = (performance.now() - t0) / 1000;
  // Fresh statistics and no dead rows from the load, as autovacuum would leave them soon after.
  await sql`VACUUM ANALYZE units, ready_tallies, status_tallies`.execute(api.database.db);

  // ---- the calls that must not grow with the backlog ------------------------------------
  const http = (path: string) => async () => {
    const res = await fetch(`${base}${path}`, { headers: { accept: "application/json" } });
    if (res.status !== 200) throw new Error(`GET ${path} answered ${res.status}`);
    await res.arrayBuffer();
  };
  await fetch(`${base}/pause`, { method: "POST" });
  await compactTallies(api.database.db);
  const next50 = await timed(opts.reps, http("/next?limit=50"));
  const state = await timed(opts.reps, http("/"));
  // A top-up of 50 (the claim in PostgreSQL; the publish that follows is the broker's cost),
  // with RTB_BROADCAST_MAX_QUEUE 100 as if 50 were queued and 50 had just finished.
  await api.database.db.updateTable("control").set({ dispatching: true }).execute();
  // The steady state: 50 units in flight finish between two top-ups, so each top-up has room
  // for 50 (untimed: that is the inbox's work), and the dispatcher folds the tallies every second.
  const db = api.database.db;
  await claimTopUp(db, 50); // the 50 that stay queued
  let inFlight: number[] = [];
  let compacted = Date.now();
  const topUp = await timed(opts.reps, async () => {
    const claim = await claimTopUp(db, 100);
    if (claim.units.length !== 50) throw new Error(`a top-up claimed ${claim.units.length} units, not 50`);
    inFlight = claim.units.map((u) => u.unitId);
  }, 3, async () => {
    await db.updateTable("units").set({ status: "success" }).where("id", "in", inFlight.length ? inFlight : [0]).execute();
    if (Date.now() - compacted >= 1_000) {
      compacted = Date.now();
      await compactTallies(db);
    }
  });

  console.log("");
  console.log(`backlog: ${opts.units.toLocaleString("en")} units, ${opts.groups} groups, ${opts.priorities} priorities   (PostgreSQL ${servers.RTB_DB_HOST.host}:${servers.RTB_DB_HOST.port})`);
  console.log(`enqueue (POST /units, ${opts.batch}/request): ${Math.round(opts.units / enqueueS).toLocaleString("en")} units/s   (${enqueueS.toFixed(1)} s; per request p50 ${pct(batchTimes, 50)} ms, p99 ${pct(batchTimes, 99)} ms)`);
  console.log(`GET /next?limit=50:  p50 ${pct(next50, 50)} ms   p99 ${pct(next50, 99)} ms   (${opts.reps} calls)`);
  console.log(`top-up of 50:        p50 ${pct(topUp, 50)} ms   p99 ${pct(topUp, 99)} ms   (${opts.reps} calls)`);
  console.log(`GET /:               p50 ${pct(state, 50)} ms   p99 ${pct(state, 99)} ms   (${opts.reps} calls)`);

  if (opts.plans) {
    console.log("\nplan of the dispatch-order query (GET /next?limit=50, and the top-up's choice):");
    for (const line of await explainNextInLine(api.database.db, 50)) console.log(`  ${line}`);
  }
} finally {
  await api.stop();
  if (!opts.keep) {
    await place.drop();
  } else {
    say(`kept database ${dbName} and broker names ${prefix}*`);
  }
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
