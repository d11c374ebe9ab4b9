/** What `npm run bench` prints: a summary per run and a table over the sizes, or JSON. */
import type { RawResult } from "./bench-raw.ts";
import type { BenchSettings, RunResult } from "./bench-run.ts";

export interface BenchReport {
  settings: BenchSettings;
  commit: string | null;
  /** Uncommitted changes under services/ or db/ in the root when it ran. */
  dirty: boolean;
  runs: RunResult[];
  raw: RawResult | null;
}

const RAW_PATH =
  "the same number of persistent messages through outbox -> jobs -> inbox with plain amqplib, each role its own process " +
  "(api: publishes to outbox with confirms, a window of --max-queue, and acks inbox; leader: outbox -> jobs; " +
  "agents: jobs -> inbox; each publishes with a confirm and acks after it, with rtb's prefetch); nothing else";

/** rtb's throughput as a share of the raw limit (measured once, at the first size). */
const ratio = (run: RunResult, raw: RawResult | null) => (raw ? run.unitsPerSec / raw.msgsPerSec : null);

export function printResults(r: BenchReport, json: boolean): void {
  const { settings: s } = r;
  if (json) {
    const { sizes: _sizes, json: _json, ...settings } = s;
    const out = {
      date: new Date().toISOString(),
      commit: r.commit,
      dirty: r.dirty,
      settings,
      raw: r.raw ? { ...r.raw, path: RAW_PATH } : null,
      runs: r.runs.map((run) => ({ ...run, ratio: ratio(run, r.raw) })),
    };
    console.log(JSON.stringify(out, null, 2));
    return;
  }
  const int = (n: number) => Math.round(n).toLocaleString("en");
  const fix = (n: number | null, digits = 1) => (n === null || !Number.isFinite(n) ? "n/a" : n.toFixed(digits));
  const mib = (n: number | null | undefined) => (n === null || n === undefined ? "n/a" : `${Math.round(n)} MiB`);
  console.log("");
  console.log(
    `rtb throughput: ${s.agents} agent(s) x RTB_AGENT_CONCURRENCY ${s.concurrency}, RTB_BROADCAST_MAX_QUEUE ${s.maxQueue}, ` +
      `${s.groups} group(s), kind ${s.kind}; leader prefetch ${s.leaderPrefetch}, inbox prefetch ${s.inboxPrefetch}`,
  );
  console.log(`services from ${s.root} at ${r.commit ?? "?"}${r.dirty ? " (with uncommitted changes)" : ""}`);
  for (const run of r.runs) {
    console.log("");
    console.log(`${int(run.units)} units`);
    console.log(`  rtb        ${int(run.unitsPerSec)} units/s: ${int(run.terminal)} terminal (${int(run.success)} success, ${int(run.error)} error) ${fix(run.seconds)} s after GET /go`);
    console.log(`  latency    dispatch -> terminal: p50 ${int(run.latencyMs.p50)} ms, p99 ${int(run.latencyMs.p99)} ms`);
    console.log(
      `  per unit   ${fix(run.perUnit.dbStatements, 2)} database statements (api), ${fix(run.perUnit.pgTransactions, 3)} PostgreSQL transactions, ` +
        `${fix(run.perUnit.brokerMessages, 2)} broker messages published`,
    );
    console.log(`  memory     peak (VmHWM): ${Object.entries(run.peakMemoryMiB).map(([name, m]) => `${name} ${mib(m)}`).join(", ")}`);
    if (run.redispatched > 0) console.log(`  note       ${int(run.redispatched)} unit(s) dispatched more than once (retried or re-published)`);
    console.log(`  enqueue    ${int(run.enqueue.unitsPerSec)} units/s through POST /units (before GET /go, not counted above)`);
    if (run.raw) console.log(`  raw        ${int(run.raw.msgsPerSec)} msgs/s (${fix(run.raw.seconds)} s, first publish to last inbox ack)`);
    const q = ratio(run, r.raw);
    if (q !== null) console.log(`  rtb / raw  ${fix(q, 2)}${run.raw ? "" : " (raw measured at the first size)"}`);
  }
  if (r.raw) console.log(`\nraw path: ${RAW_PATH}.`);
  console.log("statements and transactions include the api's background work during the run (heartbeats, reconciler) and GET / polled twice a second.");
  if (r.runs.length > 1) {
    const agentNames = Object.keys(r.runs[0]!.peakMemoryMiB).filter((n) => n.startsWith("agent-"));
    const agentMax = (run: RunResult) => Math.max(...agentNames.map((n) => run.peakMemoryMiB[n] ?? NaN));
    const rows = [
      ["units", "units/s", "p50 ms", "p99 ms", "stmts/unit", "xacts/unit", "msgs/unit", "api", "leader", "agent (max)", "rtb/raw"],
      ...r.runs.map((run) => [
        int(run.units),
        int(run.unitsPerSec),
        int(run.latencyMs.p50),
        int(run.latencyMs.p99),
        fix(run.perUnit.dbStatements, 2),
        fix(run.perUnit.pgTransactions, 3),
        fix(run.perUnit.brokerMessages, 2),
        mib(run.peakMemoryMiB.api),
        mib(run.peakMemoryMiB.leader),
        mib(Number.isFinite(agentMax(run)) ? agentMax(run) : null),
        fix(ratio(run, r.raw), 2),
      ]),
    ];
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
    console.log("");
    for (const row of rows) console.log(row.map((cell, i) => cell.padStart(widths[i]!)).join("  "));
  }
}
