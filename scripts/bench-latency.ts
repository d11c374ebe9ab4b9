/**
 * `npm run bench -- --rate R --duration D`: latency at light load. The system runs (GET /go
 * first), and units arrive through POST /units at R per second, one request per unit, for D;
 * then it waits until every unit is terminal and prints how long each stage of a unit's life
 * took (medians and p99 over the units): enqueue -> dispatched (the top-up), dispatched ->
 * queued (outbox, leader, jobs.<kind>), queued -> processing (to the agent), processing ->
 * terminal (the handler: a no-op), and terminal -> applied (the report through the inbox
 * into PostgreSQL), with dispatch -> terminal, the figure the throughput run prints too.
 * Every time is PostgreSQL's or a service's clock on this one machine.
 */
import { performance } from "node:perf_hooks";
import pg from "pg";
import { connectionOptions } from "@rtb/db";
import { startBenchRun, type BenchSettings } from "./bench-run.ts";
import { readyWithin } from "./bench-services.ts";

export interface LatencySettings {
  /** Units per second arriving through POST /units. */
  rate: number;
  durationS: number;
}

export interface Percentiles {
  p50: number;
  p99: number;
}

export interface LatencyResult {
  /** The run's database (dropped at the end unless --keep). */
  database: string;
  rate: number;
  durationS: number;
  units: number;
  /** Units per second the producer achieved (below `rate` if POST /units could not keep up). */
  achievedRate: number;
  post: Percentiles;
  stagesMs: {
    enqueueToDispatched: Percentiles;
    dispatchedToQueued: Percentiles;
    queuedToProcessing: Percentiles;
    processingToTerminal: Percentiles;
    terminalToApplied: Percentiles;
    dispatchToTerminal: Percentiles;
    enqueueToApplied: Percentiles;
  };
}

export async function runLatency(s: BenchSettings, l: LatencySettings, say: (msg: string) => void): Promise<LatencyResult> {
  const run = startBenchRun(s, say);
  const { services } = run;
  const { servers, dbName } = run.place;
  try {
    say(`light load: ${l.rate} units/s for ${l.durationS} s through POST /units, one unit per request (database ${dbName})`);
    const [apiReady] = await Promise.all(services.map((p) => readyWithin(p, 120_000)));
    const base = String(apiReady!.url).replace(/\/$/, "");
    const go = await fetch(`${base}/go`);
    if (!go.ok) throw new Error(`GET /go answered ${go.status}: ${await go.text()}`);
    await go.arrayBuffer();

    // ---- the producer: the units due by now, each in a request of its own, on a 1 ms clock
    const total = Math.max(1, Math.round(l.rate * l.durationS));
    const postMs: number[] = [];
    const inFlight = new Set<Promise<void>>();
    const t0 = performance.now();
    let sent = 0;
    const post = async (i: number) => {
      const at = performance.now();
      const res = await fetch(`${base}/units`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ kind: s.kind, group: `g-${i % s.groups}` }),
      });
      if (res.status !== 201) throw new Error(`POST /units answered ${res.status}: ${(await res.text()).slice(0, 300)}`);
      await res.arrayBuffer();
      postMs.push(performance.now() - at);
    };
    let failure: unknown = null;
    while (sent < total && failure === null) {
      const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * l.rate) + 1);
      while (sent < due) {
        const p = post(sent++).catch((err: unknown) => void (failure ??= err));
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    await Promise.all(inFlight);
    if (failure !== null) throw failure;
    const producedS = (performance.now() - t0) / 1000;

    // ---- every unit terminal
    const db = new pg.Client(connectionOptions({ ...servers, RTB_DB_POOL_SIZE: 1 }, dbName));
    await db.connect();
    try {
      let progressAt = Date.now();
      let last = -1;
      for (;;) {
        const { rows } = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM units WHERE status IN ('success', 'error', 'cancelled')`);
        const n = rows[0]!.n;
        if (n >= total) break;
        if (n > last) progressAt = Date.now();
        last = n;
        if (Date.now() - progressAt > s.stallTimeoutS * 1000) throw new Error(`no unit finished for ${s.stallTimeoutS} s (--stall-timeout): ${n} of ${total} terminal`);
        await new Promise((r) => setTimeout(r, 200));
      }
      const stages = await stageTimes(db);
      return {
        database: dbName,
        rate: l.rate,
        durationS: l.durationS,
        units: total,
        achievedRate: total / producedS,
        post: percentiles(postMs),
        stagesMs: stages,
      };
    } finally {
      await db.end();
    }
  } finally {
    await run.end();
  }
}

function percentiles(values: number[]): Percentiles {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => (sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!);
  return { p50: at(0.5), p99: at(0.99) };
}

/**
 * Each first attempt's events (a unit of a light run is dispatched once) and its row: when
 * it was created, when each status was recorded (the event's own time: the api's for
 * `dispatched`, the leader's for `queued`, the agent's for the rest), and when its terminal
 * status was applied (the row's updated_at, the applying transaction's time).
 */
async function stageTimes(db: pg.Client): Promise<LatencyResult["stagesMs"]> {
  const stage = (from: string, to: string) => `
    percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM ${to} - ${from}) * 1000),
    percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM ${to} - ${from}) * 1000)`;
  const { rows } = await db.query<unknown[]>({
    rowMode: "array",
    text: `
      WITH e AS (
        SELECT u.id, u.created_at, u.updated_at,
               min(ev.at) FILTER (WHERE ev.status = 'dispatched') AS dispatched,
               min(ev.at) FILTER (WHERE ev.status = 'queued') AS queued,
               min(ev.at) FILTER (WHERE ev.status = 'processing') AS processing,
               min(ev.at) FILTER (WHERE ev.status IN ('success', 'error')) AS terminal
        FROM units u JOIN unit_events ev ON ev.unit_id = u.id AND ev.attempt = 1
        GROUP BY u.id)
      SELECT ${stage("created_at", "dispatched")}, ${stage("dispatched", "queued")}, ${stage("queued", "processing")},
             ${stage("processing", "terminal")}, ${stage("terminal", "updated_at")}, ${stage("dispatched", "terminal")},
             ${stage("created_at", "updated_at")}
      FROM e`,
  });
  const r = (rows[0] as (number | string | null)[]).map((v) => (v === null ? NaN : Number(v)));
  const pair = (i: number): Percentiles => ({ p50: r[2 * i]!, p99: r[2 * i + 1]! });
  return {
    enqueueToDispatched: pair(0),
    dispatchedToQueued: pair(1),
    queuedToProcessing: pair(2),
    processingToTerminal: pair(3),
    terminalToApplied: pair(4),
    dispatchToTerminal: pair(5),
    enqueueToApplied: pair(6),
  };
}

export function printLatency(s: BenchSettings, r: LatencyResult, json: boolean): void {
  if (json) {
    console.log(JSON.stringify({ date: new Date().toISOString(), settings: { agents: s.agents, concurrency: s.concurrency, maxQueue: s.maxQueue, kind: s.kind }, latency: r }, null, 2));
    return;
  }
  const ms = (n: number) => (Number.isFinite(n) ? `${n.toFixed(1)} ms` : "n/a");
  const row = (name: string, p: Percentiles) => console.log(`  ${name.padEnd(26)} p50 ${ms(p.p50).padStart(9)}   p99 ${ms(p.p99).padStart(9)}`);
  console.log("");
  console.log(
    `rtb at light load: ${r.units.toLocaleString("en")} units at ${r.rate} units/s (achieved ${r.achievedRate.toFixed(1)}) over ${r.durationS} s, ` +
      `one POST /units per unit; ${s.agents} agent(s) x RTB_AGENT_CONCURRENCY ${s.concurrency}, kind ${s.kind}`,
  );
  row("POST /units (round trip)", r.post);
  row("enqueue -> dispatched", r.stagesMs.enqueueToDispatched);
  row("dispatched -> queued", r.stagesMs.dispatchedToQueued);
  row("queued -> processing", r.stagesMs.queuedToProcessing);
  row("processing -> terminal", r.stagesMs.processingToTerminal);
  row("terminal -> applied", r.stagesMs.terminalToApplied);
  row("dispatch -> terminal", r.stagesMs.dispatchToTerminal);
  row("enqueue -> applied", r.stagesMs.enqueueToApplied);
  console.log("each stage's percentiles are over the units on their own: the stages' p50s need not add up to an end-to-end p50.");
}
