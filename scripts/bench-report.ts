/** What `npm run bench` prints: a summary per run and a table over the sizes (or the peers' rounds), or JSON. */
import { PEER_CHUNK, PGBOSS_POLL_S, shownUrl, type PeerResult, type PeerRounds } from "./bench-peers.ts";
import { rawLine, type RawResult } from "./bench-raw.ts";
import type { BenchSettings, RunResult } from "./bench-run.ts";

export interface BenchReport {
  settings: BenchSettings;
  commit: string | null;
  /** Uncommitted changes under services/ or db/ in the root when it ran. */
  dirty: boolean;
  runs: RunResult[];
  raw: RawResult | null;
  /** --peers: BullMQ's and pg-boss's rounds; `runs` are rtb's, one a round. */
  peers: PeerRounds | null;
}

const RAW_PATH =
  "the same units through outbox -> jobs -> inbox with plain amqplib, persistent messages and rtb's batching, each role its own process " +
  "(api: dispatch messages of rtb's size to outbox, pipelined with at most --max-queue units awaiting their confirm, and inbox acked " +
  "with one multiple-ack per turn; leader: each outbox delivery cut into jobs of RTB_JOB_MAX_UNITS, their confirms awaited together, " +
  "then one queued report, then the ack; agents: per job one processing and one success report, both confirms awaited together, " +
  "then the ack; rtb's prefetch); no database, no validation";

/** rtb's throughput as a share of the raw limit's (measured once, at the first size), in units per second. */
const ratio = (run: RunResult, raw: RawResult | null) => (raw ? run.unitsPerSec / raw.unitsPerSec : null);

const median = (xs: number[]) => {
  if (xs.length === 0) return null;
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

/** Each system's median over the rounds it ran, and rtb's as a multiple of each peer's. */
function peerSummary(runs: RunResult[], p: PeerRounds) {
  const rtb = median(runs.map((r) => r.unitsPerSec));
  const peer = (results: PeerResult[]) => median(results.map((r) => r.jobsPerSec));
  const bullmq = peer(p.bullmq);
  const pgboss = peer(p.pgboss);
  const over = (x: number | null) => (rtb === null || x === null ? null : rtb / x);
  return { rtb, bullmq, pgboss, rtbToBullmq: over(bullmq), rtbToPgboss: over(pgboss) };
}

const chunk = PEER_CHUNK.toLocaleString("en");
const BULLMQ_METHOD = `one Worker in the bench's process; jobs added with addBulk, ${chunk} a call, before it starts; BullMQ's defaults otherwise (completed jobs kept)`;
const PGBOSS_METHOD =
  `in a database of its own on rtb's PostgreSQL; workers of one PgBoss in the bench's process, polling every ${PGBOSS_POLL_S} s ` +
  `(pg-boss's shortest); jobs inserted ${chunk} a call before they start`;

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
      peers: r.peers ? peersJson(r.runs, r.peers) : null,
    };
    console.log(JSON.stringify(out, null, 2));
    return;
  }
  const int = (n: number) => Math.round(n).toLocaleString("en");
  const fix = (n: number | null, digits = 1) => (n === null || !Number.isFinite(n) ? "n/a" : n.toFixed(digits));
  const mib = (n: number | null | undefined) => (n === null || n === undefined ? "n/a" : `${Math.round(n)} MiB`);
  console.log("");
  console.log(
    `rtb throughput: ${s.apis} api(s), ${s.agents} agent(s) x RTB_AGENT_CONCURRENCY ${s.concurrency}, RTB_BROADCAST_MAX_QUEUE ${s.maxQueue}, ` +
      `${s.groups} group(s), kind ${s.kind}; leader prefetch ${s.leaderPrefetch}, inbox prefetch ${s.inboxPrefetch}`,
  );
  console.log(`services from ${s.root} at ${r.commit ?? "?"}${r.dirty ? " (with uncommitted changes)" : ""}`);
  for (const [i, run] of r.runs.entries()) {
    console.log("");
    console.log(`${int(run.units)} units${r.peers ? `, round ${i + 1}` : ""}`);
    console.log(`  rtb        ${int(run.unitsPerSec)} units/s: ${int(run.terminal)} terminal (${int(run.success)} success, ${int(run.error)} error) ${fix(run.seconds)} s after GET /go`);
    console.log(`  latency    dispatch -> terminal: p50 ${int(run.latencyMs.p50)} ms, p99 ${int(run.latencyMs.p99)} ms`);
    console.log(
      `  per unit   ${fix(run.perUnit.dbStatements, 2)} database statements (api), ${fix(run.perUnit.pgTransactions, 3)} PostgreSQL transactions, ` +
        `${fix(run.perUnit.brokerMessages, 2)} broker messages published, ${fix(run.perUnit.confirmWaits, 2)} confirm waits; ${fix(run.unitsPerJob, 1)} units per job message (mean)`,
    );
    console.log(`  memory     peak (VmHWM): ${Object.entries(run.peakMemoryMiB).map(([name, m]) => `${name} ${mib(m)}`).join(", ")}`);
    if (run.redispatched > 0) console.log(`  note       ${int(run.redispatched)} unit(s) dispatched more than once (retried or re-published)`);
    console.log(`  enqueue    ${int(run.enqueue.unitsPerSec)} units/s through POST /units (before GET /go, not counted above)`);
    if (run.raw) console.log(`  raw        ${rawLine(run.raw)}: ${fix(run.raw.seconds)} s, first publish to the last terminal report acked`);
    const q = ratio(run, r.raw);
    if (q !== null) console.log(`  rtb / raw  ${fix(q, 2)}${run.raw ? "" : ` (raw measured ${r.peers ? "in the first round" : "at the first size"})`}`);
  }
  if (r.raw) console.log(`\nraw path: ${RAW_PATH}.`);
  console.log("statements and transactions include the api's background work during the run (heartbeats, reconciler) and GET / polled twice a second.");
  if (r.peers) printPeers(r.runs, r.peers);
  else if (r.runs.length > 1) {
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

function peersJson(runs: RunResult[], p: PeerRounds) {
  const m = peerSummary(runs, p);
  return {
    settings: { ...p.settings, redisUrl: shownUrl(p.settings.redisUrl) },
    rtb: { medianUnitsPerSec: m.rtb },
    bullmq: { version: p.versions.bullmq, skipped: p.bullmqSkipped, method: BULLMQ_METHOD, rounds: p.bullmq, medianJobsPerSec: m.bullmq },
    pgboss: { version: p.versions.pgboss, method: PGBOSS_METHOD, rounds: p.pgboss, medianJobsPerSec: m.pgboss },
    ratio: { rtbToBullmq: m.rtbToBullmq, rtbToPgboss: m.rtbToPgboss },
  };
}

function printPeers(runs: RunResult[], p: PeerRounds): void {
  const int = (n: number | null | undefined) => (n === null || n === undefined ? "-" : Math.round(n).toLocaleString("en"));
  const fix = (n: number | null) => (n === null ? "n/a" : n.toFixed(2));
  const s = p.settings;
  const m = peerSummary(runs, p);
  console.log("");
  console.log(`peers: the same ${int(runs[0]?.units)} no-op jobs, ${s.rounds} round(s), round-robin with rtb (rtb, BullMQ, pg-boss, rtb, ...); each timed from its workers' start to the last job completed`);
  if (p.bullmqSkipped) console.log(`  BullMQ skipped: ${p.bullmqSkipped}`);
  else console.log(`  BullMQ ${p.versions.bullmq} on ${shownUrl(s.redisUrl)}, concurrency ${s.bullmqConcurrency}: ${BULLMQ_METHOD}`);
  console.log(`  pg-boss ${p.versions.pgboss}, ${s.pgbossWorkers} worker(s) x batchSize ${s.pgbossBatch}: ${PGBOSS_METHOD}`);
  const rows = [
    ["round", "rtb units/s", "BullMQ jobs/s", "pg-boss jobs/s"],
    ...runs.map((run, i) => [String(i + 1), int(run.unitsPerSec), p.bullmqSkipped ? "skipped" : int(p.bullmq[i]?.jobsPerSec), int(p.pgboss[i]?.jobsPerSec)]),
    ["median", int(m.rtb), p.bullmqSkipped ? "skipped" : int(m.bullmq), int(m.pgboss)],
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  console.log("");
  for (const row of rows) console.log(row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join("  "));
  console.log("");
  console.log(`rtb / BullMQ   ${p.bullmqSkipped ? "n/a (BullMQ skipped)" : fix(m.rtbToBullmq)}`);
  console.log(`rtb / pg-boss  ${fix(m.rtbToPgboss)}`);
  console.log("(medians over the rounds; above 1, rtb finished the same work sooner)");
}
