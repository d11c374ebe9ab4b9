import pg from "pg";
import { describe, expect, it } from "vitest";
import { rawBroker, runCommand, serversEnv, testServers } from "@rtb/testing";

/**
 * `npm run bench -- --workflows N`, tiny: 20 order workflows (5 noop steps each) and a fan-out
 * of 30 children, as JSON; then 10 workflows without the fan-out, as text. Speed is not asserted
 * (the machine is shared); that every figure is there, positive and made of the counts, that
 * every workflow ended in success, and that the runs left nothing behind, is.
 */
async function bench(args: string[]) {
  const run = runCommand(process.execPath, ["--import", "tsx", "scripts/bench.ts", ...args], serversEnv());
  let stdout = "";
  run.child.stdout!.on("data", (d) => (stdout += d));
  const code = await run.exited;
  await run.closed;
  return { code, stdout, output: run.output() };
}

async function databaseExists(name: string): Promise<boolean> {
  const admin = new pg.Client({ ...testServers().db, database: "postgres" });
  await admin.connect();
  try {
    return (await admin.query("SELECT 1 FROM pg_database WHERE datname = $1", [name])).rowCount === 1;
  } finally {
    await admin.end();
  }
}

/** Does `queue` exist? (checkQueue on a missing queue closes the channel with 404.) */
async function queueExists(queue: string): Promise<boolean> {
  const conn = await rawBroker();
  try {
    const ch = await conn.createChannel();
    ch.on("error", () => {});
    return await ch.checkQueue(queue).then(
      () => true,
      () => false,
    );
  } finally {
    await conn.close().catch(() => {});
  }
}

const small = ["--agents", "1", "--concurrency", "20", "--max-queue", "100"];
const positive = (n: unknown, name: string) => {
  expect(Number.isFinite(n), name).toBe(true);
  expect(n as number, name).toBeGreaterThan(0);
};
const ordered = (p: { p50: number; p95: number; p99: number }, name: string) => {
  positive(p.p50, `${name}.p50`);
  expect(p.p95, name).toBeGreaterThanOrEqual(p.p50);
  expect(p.p99, name).toBeGreaterThanOrEqual(p.p95);
};

describe("npm run bench -- --workflows", () => {
  it("measures order workflows and a fan-out through the whole system, every workflow a success, and drops its places", async () => {
    const { code, stdout, output } = await bench(["--workflows", "20", "--fan-out", "30", ...small, "--json"]);
    expect(code, output).toBe(0);
    const out = JSON.parse(stdout);
    expect(out.settings).toMatchObject({ agents: 1, concurrency: 20, maxQueue: 100, kind: "noop", fanOut: 30 });
    expect(out.method).toContain("POST /workflows");
    expect(out.workflows).toHaveLength(1);
    const run = out.workflows[0];

    // Every workflow and every step ended in success (noop never fails), counted from the database.
    expect(run).toMatchObject({ workflows: 20, steps: 100, terminal: 100, success: 100, error: 0 });
    expect(run.finished).toEqual({ success: 20, error: 0, cancelled: 0, running: 0 });
    positive(run.seconds, "seconds");
    expect(run.workflowsPerSec).toBeCloseTo(20 / run.seconds, 6);
    positive(run.stepSeconds, "stepSeconds");
    expect(run.stepsPerSec).toBeCloseTo(100 / run.stepSeconds, 6);
    // The last step's terminal event comes before the transaction that applies it finishes its workflow.
    expect(run.stepSeconds).toBeLessThanOrEqual(run.seconds);

    // Latencies: each workflow's, whole and from its first dispatch; each step's; the handoff between levels.
    const l = run.latencyMs;
    for (const name of ["enqueueToFinished", "goToFinished", "startToFinished", "handoff", "unblockedToDispatched"]) ordered(l[name], name);
    expect(l.enqueueToFinished.p50).toBeGreaterThanOrEqual(l.goToFinished.p50);
    expect(l.goToFinished.p50).toBeGreaterThanOrEqual(l.startToFinished.p50);
    positive(l.stepDispatchToTerminal.p50, "stepDispatchToTerminal.p50");
    expect(l.stepDispatchToTerminal.p99).toBeGreaterThanOrEqual(l.stepDispatchToTerminal.p50);

    // The unit benchmark's figures, per step.
    for (const name of ["dbStatements", "pgTransactions", "brokerMessages", "confirmWaits"]) positive(run.perStep[name], name);
    expect(run.unitsPerJob).toBeGreaterThanOrEqual(1);
    expect(run.unitsPerJob).toBeLessThanOrEqual(50);
    expect(Object.keys(run.peakMemoryMiB).sort()).toEqual(["agent-1", "api", "leader"]);
    for (const mib of Object.values(run.peakMemoryMiB)) expect(mib).toBeGreaterThan(20);
    // Where the server runs without autovacuum (as CI's does), the bench analyzed on its own, at least once during the 11 s before GET /go.
    expect(run.analyze.everyS).toBeGreaterThanOrEqual(0);
    if (run.analyze.everyS > 0) expect(run.analyze.runs).toBeGreaterThanOrEqual(1);
    positive(run.enqueue.workflowsPerSec, "enqueue.workflowsPerSec");
    expect(run.enqueue.workflowsPerSec).toBeCloseTo(20 / run.enqueue.seconds, 6);

    // The fan-out: its root, 30 children and the join, all successes; children and join over its span.
    const f = out.fanOut;
    expect(f).toMatchObject({ children: 30, steps: 32, status: "success", success: 32 });
    positive(f.seconds, "fanOut.seconds");
    positive(f.spawnSeconds, "fanOut.spawnSeconds");
    expect(f.totalSeconds).toBeGreaterThanOrEqual(f.seconds);
    expect(f.stepsPerSec).toBeCloseTo(31 / f.seconds, 6);

    // Nothing left behind: no database, no queues (the fan-out's agents served noop and simulate too).
    for (const [db, prefix, kinds] of [[run.database, run.brokerPrefix, ["noop"]], [f.database, f.brokerPrefix, ["noop", "simulate"]]] as const) {
      expect(await databaseExists(db), `database ${db} still exists`).toBe(false);
      for (const q of ["outbox", "inbox", "dead", ...kinds.map((k) => `jobs.${k}`)]) expect(await queueExists(`${prefix}${q}`), `${prefix}${q} still exists`).toBe(false);
    }
  }, 240_000);

  it("prints the figures as text, and --fan-out 0 skips the fan-out", async () => {
    const { code, stdout, output } = await bench(["--workflows", "10", "--fan-out", "0", ...small]);
    expect(code, output).toBe(0);
    expect(stdout).toMatch(/^10 order workflows \(validate -> charge \+ reserve -> ship -> notify\), 50 steps$/m);
    expect(stdout).toMatch(/^ {2}workflows {2}[\d,]+ workflows\/s: 10 finished \(10 success, 0 error, 0 cancelled\) [\d.]+ s after GET \/go$/m);
    expect(stdout).toMatch(/^ {2}steps {6}[\d,]+ steps\/s: 50 terminal \(50 success, 0 error\) [\d.]+ s after GET \/go$/m);
    expect(stdout).toMatch(/^ {2}workflow {3}first dispatch -> finished: p50 [\d,]+ ms, p95 [\d,]+ ms, p99 [\d,]+ ms/m);
    expect(stdout).toMatch(/enqueue -> finished: p50 [\d,]+ ms/);
    expect(stdout).toMatch(/^ {2}handoff {4}last dependency's success -> dependent dispatched: p50 [\d,]+ ms/m);
    expect(stdout).toMatch(/^ {2}per step {3}[\d.]+ database statements \(api\), [\d.]+ PostgreSQL transactions, [\d.]+ broker messages published/m);
    expect(stdout).toMatch(/^ {2}enqueue {4}[\d,]+ workflows\/s through POST \/workflows/m);
    expect(stdout).not.toContain("n/a");
    expect(stdout).not.toContain("fan-out");
  }, 240_000);

  it("refuses bad flags, naming them, with exit code 2", async () => {
    const zero = await bench(["--workflows", "0"]);
    expect(zero.code).toBe(2);
    expect(zero.output).toContain('--workflows="0"');
    const big = await bench(["--workflows", "10", "--fan-out", "10000"]);
    expect(big.code).toBe(2);
    expect(big.output).toContain('--fan-out="10000"');
    const alone = await bench(["--fan-out", "10"]);
    expect(alone.code).toBe(2);
    expect(alone.output).toContain("--fan-out: only with --workflows");
    const peers = await bench(["--workflows", "10", "--peers"]);
    expect(peers.code).toBe(2);
    expect(peers.output).toContain("--workflows and --peers");
  });
});
