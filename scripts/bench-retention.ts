/**
 * `npm run bench -- --retention 5s --duration 120s`: does retention hold at full speed? Two
 * phases of the same length, each with fresh processes, database and queues: first without
 * pruning (RTB_RETENTION=0), then with it. In each, noop units finish as fast as the system
 * goes (the bench keeps a backlog of 10,000 to 20,000 pending units), and every
 * --sample-every seconds the bench prints the size of units and unit_events
 * (pg_total_relation_size: table, indexes and TOAST) and their rows. Then the throughput of
 * each phase (units finished per second over the phase, pruned ones included) and the ratio.
 *
 * With autovacuum off (this repository's CI server), space freed by deletes is never reused
 * and the tables grow whatever is pruned; the bench then vacuums both tables every
 * --vacuum-every seconds in both phases, as autovacuum would, and says so.
 */
import { loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import pg from "pg";
import { connectionOptions } from "@rtb/db";
import type { Duration } from "@rtb/runtime";
import { autovacuumOn } from "./bench-measure.ts";
import { readyWithin } from "./bench-services.ts";
import { startBenchRun, type BenchSettings } from "./bench-run.ts";

export interface RetentionSettings {
  retention: Duration;
  durationS: number;
  sampleEveryS: number;
  /** null: decided by the server's autovacuum setting (on: never; off: every 10 s). */
  vacuumEveryS: number | null;
}

export interface TableSample {
  /** Seconds since GET /go. */
  t: number;
  units: { rows: number; bytes: number };
  events: { rows: number; bytes: number };
  /** Units finished so far (in the table or pruned). */
  finished: number;
  pruned: number;
}

export interface Phase {
  retention: string;
  /** The phase's scratch database (dropped at its end unless --keep). */
  database: string;
  seconds: number;
  finished: number;
  unitsPerSec: number;
  samples: TableSample[];
  vacuumEveryS: number;
  /** The machine's 1-minute load average at the phase's end: other work on it shows here. */
  loadAverage: number;
}

const LOW_WATER = 10_000;
const BATCH = 10_000;

export async function runRetentionPhase(s: BenchSettings, r: RetentionSettings, retention: Duration, say: (msg: string) => void): Promise<Phase> {
  const run = startBenchRun(s, say, { env: { RTB_RETENTION: retention.text } });
  const { services } = run;
  const { servers, dbName } = run.place;
  const client = new pg.Client(connectionOptions({ ...servers, RTB_DB_POOL_SIZE: 1 }, dbName));
  try {
    say(`retention ${retention.text}: starting the api, a leader and ${s.agents} agent(s) (database ${dbName})`);
    const [apiReady] = await Promise.all(services.map((p) => readyWithin(p, 120_000)));
    const base = String(apiReady!.url).replace(/\/$/, "");
    await client.connect();
    const vacuumEveryS = r.vacuumEveryS ?? ((await autovacuumOn(client)) ? 0 : 10);
    const state = async (): Promise<any> => {
      const res = await fetch(`${base}/`, { signal: AbortSignal.timeout(10_000) });
      if (!res.ok) throw new Error(`GET / answered ${res.status}`);
      return res.json();
    };
    const enqueue = async (n: number) => {
      const body = JSON.stringify(Array.from({ length: n }, (_, i) => ({ kind: s.kind, group: `g-${i % s.groups}` })));
      const res = await fetch(`${base}/units`, { method: "POST", headers: { "content-type": "application/json" }, body });
      if (res.status !== 201) throw new Error(`POST /units answered ${res.status}: ${(await res.text()).slice(0, 300)}`);
      await res.arrayBuffer();
    };
    const finished = (st: any) => (st.counts.success ?? 0) + (st.counts.error ?? 0) + (st.counts.cancelled ?? 0) + st.retention.pruned.units;
    const sample = async (t: number): Promise<TableSample> => {
      const { rows } = await client.query<{ ur: number; ub: string; er: number; eb: string }>(`
        SELECT (SELECT count(*) FROM units)::int AS ur, pg_total_relation_size('units') AS ub,
               (SELECT count(*) FROM unit_events)::int AS er, pg_total_relation_size('unit_events') AS eb`);
      const st = await state();
      const row = rows[0]!;
      return { t, units: { rows: row.ur, bytes: Number(row.ub) }, events: { rows: row.er, bytes: Number(row.eb) }, finished: finished(st), pruned: st.retention.pruned.units };
    };

    await enqueue(BATCH);
    await enqueue(BATCH);
    const go = await fetch(`${base}/go`);
    if (!go.ok) throw new Error(`GET /go answered ${go.status}`);
    await go.arrayBuffer();
    const started = performance.now();
    const elapsed = () => (performance.now() - started) / 1000;
    const samples: TableSample[] = [];
    let nextSample = r.sampleEveryS;
    let nextVacuum = vacuumEveryS || Infinity;
    say(`GET /go; ${r.durationS} s${vacuumEveryS ? `, VACUUM units, unit_events every ${vacuumEveryS} s (autovacuum is off)` : ""}`);
    while (elapsed() < r.durationS) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      if (services.some((p) => !p.running())) throw new Error(`a service exited during the run; its last lines:\n${services.find((p) => !p.running())!.tail()}`);
      const st = await state();
      if (st.counts.pending < LOW_WATER) await enqueue(BATCH);
      if (elapsed() >= nextVacuum) {
        nextVacuum += vacuumEveryS;
        await client.query("VACUUM units, unit_events");
      }
      if (elapsed() >= nextSample) {
        nextSample += r.sampleEveryS;
        const x = await sample(Math.round(elapsed()));
        samples.push(x);
        say(`  ${x.t} s: units ${x.units.rows.toLocaleString("en")} rows ${mib(x.units.bytes)}, unit_events ${x.events.rows.toLocaleString("en")} rows ${mib(x.events.bytes)}; ${x.finished.toLocaleString("en")} finished, ${x.pruned.toLocaleString("en")} pruned`);
      }
    }
    const end = await state();
    const seconds = elapsed();
    const done = finished(end);
    return { retention: retention.text, database: dbName, seconds, finished: done, unitsPerSec: done / seconds, samples, vacuumEveryS, loadAverage: loadavg()[0]! };
  } finally {
    await client.end().catch(() => {});
    await run.end();
  }
}

const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

export function printRetention(s: BenchSettings, r: RetentionSettings, phases: Phase[], json: boolean): void {
  const [without, withPruning] = phases;
  const ratio = without && withPruning ? withPruning.unitsPerSec / without.unitsPerSec : null;
  if (json) {
    console.log(JSON.stringify({ date: new Date().toISOString(), settings: { ...s, ...r }, phases, ratio }, null, 2));
    return;
  }
  const int = (n: number) => Math.round(n).toLocaleString("en");
  console.log("");
  console.log(`retention at full speed: ${s.agents} agent(s) x ${s.concurrency}, RTB_BROADCAST_MAX_QUEUE ${s.maxQueue}, kind ${s.kind}, ${r.durationS} s per phase`);
  for (const p of phases) {
    console.log("");
    console.log(`RTB_RETENTION=${p.retention}${p.vacuumEveryS ? ` (VACUUM every ${p.vacuumEveryS} s: autovacuum is off)` : ""}`);
    const rows = [
      ["t s", "units rows", "units size", "events rows", "events size", "finished", "pruned", "units/s"],
      ...p.samples.map((x, i) => {
        const prev = i === 0 ? { t: 0, finished: 0 } : p.samples[i - 1]!;
        return [String(x.t), int(x.units.rows), mib(x.units.bytes), int(x.events.rows), mib(x.events.bytes), int(x.finished), int(x.pruned), int((x.finished - prev.finished) / (x.t - prev.t))];
      }),
    ];
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
    for (const row of rows) console.log("  " + row.map((cell, i) => cell.padStart(widths[i]!)).join("  "));
    console.log(`  throughput ${int(p.unitsPerSec)} units/s (${int(p.finished)} finished in ${p.seconds.toFixed(1)} s); load average ${p.loadAverage.toFixed(1)} at the end`);
  }
  if (ratio !== null) console.log(`\nwith pruning / without: ${ratio.toFixed(2)}`);
}
