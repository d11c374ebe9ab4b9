import pg from "pg";
import { describe, expect, inject, it } from "vitest";
import { rawBroker, runScript } from "@rtb/testing";
import { delta, parsePrometheus } from "../../scripts/bench-measure.ts";

/**
 * `npm run bench`, tiny: the whole system over 200 noop units and the raw amqplib path over
 * the same 200 units, as JSON. Speed is not asserted (the machine is shared); what is asserted is
 * that every figure is there and plausible, and that the run left nothing behind.
 */
const bench = (args: string[]) => runScript("scripts/bench.ts", args);

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

describe("npm run bench", () => {
  it("measures the whole system and the raw limit, then stops everything and drops its place", async () => {
    const { code, stdout, stderr } = await bench(["--units", "200", "--agents", "1", "--concurrency", "20", "--max-queue", "100", "--json"]);
    expect(code, stderr).toBe(0);
    const out = JSON.parse(stdout);
    expect(out.settings).toMatchObject({ agents: 1, concurrency: 20, maxQueue: 100, kind: "noop" });
    expect(out.runs).toHaveLength(1);
    const run = out.runs[0];

    // Every unit terminal (noop never fails), and the figures computed from them.
    expect(run).toMatchObject({ units: 200, terminal: 200, success: 200, error: 0 });
    expect(run.seconds).toBeGreaterThan(0);
    expect(run.unitsPerSec).toBeCloseTo(200 / run.seconds, 6);
    expect(run.latencyMs.p50).toBeGreaterThan(0);
    expect(run.latencyMs.p99).toBeGreaterThanOrEqual(run.latencyMs.p50);
    // The api ran transactions and statements for these units, and every service published.
    expect(run.perUnit.pgTransactions).toBeGreaterThan(0);
    expect(run.perUnit.dbStatements).toBeGreaterThan(0);
    expect(run.perUnit.brokerMessages).toBeGreaterThan(0);
    // The services waited for confirms (api top-ups, leader routes, agent jobs), at most a few times per unit.
    expect(run.perUnit.confirmWaits).toBeGreaterThan(0);
    expect(run.perUnit.confirmWaits).toBeLessThan(4);
    // The leader's job sizes, from its histogram: at least one unit per job, at most RTB_JOB_MAX_UNITS.
    expect(run.unitsPerJob).toBeGreaterThanOrEqual(1);
    expect(run.unitsPerJob).toBeLessThanOrEqual(50);

    // The raw path carried all 200 units, batched as rtb batches them (100 per outbox message,
    // RTB_JOB_MAX_UNITS 50 per job): 2 outbox messages, 4 jobs, 2 `queued` reports and 2
    // reports per job, 16 messages; and rtb is compared with it unit for unit.
    expect(out.raw).toMatchObject({ units: 200, unitsPerMessage: 100, jobUnits: 50, messages: 16 });
    expect(out.raw.messagesPerUnit).toBeCloseTo(16 / 200, 6);
    expect(out.raw.unitsPerSec).toBeCloseTo(200 / out.raw.seconds, 6);
    expect(out.raw.path).toContain("outbox -> jobs -> inbox");
    expect(run.ratio).toBeCloseTo(run.unitsPerSec / out.raw.unitsPerSec, 6);

    // Peak memory of each service process (node itself, not a tsx wrapper: tens of MiB at least).
    expect(Object.keys(run.peakMemoryMiB).sort()).toEqual(["agent-1", "api", "leader"]);
    for (const mib of Object.values(run.peakMemoryMiB)) expect(mib).toBeGreaterThan(20);

    // Nothing left behind: no database, no queues (rtb's and the raw path's).
    const s = inject("rtbServers");
    const admin = new pg.Client({ ...s.db, database: "postgres" });
    await admin.connect();
    try {
      const { rows } = await admin.query("SELECT 1 FROM pg_database WHERE datname = $1", [run.database]);
      expect(rows, `database ${run.database} still exists`).toHaveLength(0);
    } finally {
      await admin.end();
    }
    for (const q of ["outbox", "inbox", "dead", "jobs.noop", "raw.outbox", "raw.jobs", "raw.inbox"]) {
      expect(await queueExists(`${run.brokerPrefix}${q}`), `${run.brokerPrefix}${q} still exists`).toBe(false);
    }
  }, 240_000);

  it("--retention: both phases, each with table sizes over time and its throughput, and their ratio; its place dropped", async () => {
    const { code, stdout, stderr } = await bench(["--retention", "2s", "--duration", "6s", "--sample-every", "2", "--agents", "1", "--concurrency", "20", "--max-queue", "100", "--json"]);
    expect(code, stderr).toBe(0);
    const out = JSON.parse(stdout);
    expect(out.phases.map((p: { retention: string }) => p.retention)).toEqual(["0", "2s"]);
    for (const phase of out.phases) {
      expect(phase.samples.length).toBeGreaterThan(0);
      for (const x of phase.samples) {
        expect(x.units.bytes).toBeGreaterThan(0);
        expect(x.events.bytes).toBeGreaterThan(0);
        expect(x.units.rows).toBeGreaterThan(0);
      }
      expect(phase.finished).toBeGreaterThan(0);
      expect(phase.unitsPerSec).toBeCloseTo(phase.finished / phase.seconds, 6);
    }
    // Nothing is pruned without retention; speed is not asserted (the machine is shared).
    expect(out.phases[0].samples.every((x: { pruned: number }) => x.pruned === 0)).toBe(true);
    expect(out.ratio).toBeCloseTo(out.phases[1].unitsPerSec / out.phases[0].unitsPerSec, 6);
    expect(stderr).toMatch(/unit_events [\d,]+ rows/);
    const s = inject("rtbServers");
    const admin = new pg.Client({ ...s.db, database: "postgres" });
    await admin.connect();
    try {
      const { rows } = await admin.query("SELECT datname FROM pg_database WHERE datname = ANY($1)", [out.phases.map((p: { database: string }) => p.database)]);
      expect(rows).toEqual([]);
    } finally {
      await admin.end();
    }
  }, 240_000);

  it("--rate: units arriving one per request, each stage of their lives timed, every unit accounted for; its place dropped", async () => {
    const { code, stdout, stderr } = await bench(["--rate", "40", "--duration", "3s", "--agents", "1", "--concurrency", "10", "--json"]);
    expect(code, stderr).toBe(0);
    const { latency } = JSON.parse(stdout);
    expect(latency).toMatchObject({ rate: 40, durationS: 3, units: 120 });
    // The producer kept the pace it was given (within what a shared machine allows).
    expect(latency.achievedRate).toBeGreaterThan(20);
    expect(latency.achievedRate).toBeLessThanOrEqual(41);
    const stages = latency.stagesMs;
    expect(Object.keys(stages).sort()).toEqual(
      ["dispatchToTerminal", "dispatchedToQueued", "enqueueToApplied", "enqueueToDispatched", "processingToTerminal", "queuedToProcessing", "terminalToApplied"].sort(),
    );
    for (const [name, p] of Object.entries(stages) as [string, { p50: number; p99: number }][]) {
      expect(Number.isFinite(p.p50), name).toBe(true);
      expect(p.p99, name).toBeGreaterThanOrEqual(p.p50);
    }
    // A unit is applied after it was enqueued, and the whole is at least its last stage.
    expect(stages.enqueueToApplied.p50).toBeGreaterThan(0);
    expect(stages.enqueueToApplied.p50).toBeGreaterThanOrEqual(stages.terminalToApplied.p50);
    expect(latency.post.p50).toBeGreaterThan(0);
    const s = inject("rtbServers");
    const admin = new pg.Client({ ...s.db, database: "postgres" });
    await admin.connect();
    try {
      const { rows } = await admin.query("SELECT datname FROM pg_database WHERE datname = $1", [latency.database]);
      expect(rows).toEqual([]);
    } finally {
      await admin.end();
    }
  }, 240_000);

  it("refuses a bad flag, naming it, with exit code 2", async () => {
    const bad = await bench(["--units", "lots"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--units="lots"');
    const unknown = await bench(["--agnets", "2"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("--agnets");
    const tooBig = await bench(["--max-queue", "100001"]);
    expect(tooBig.code).toBe(2);
    expect(tooBig.stderr).toContain("--max-queue");
    const retention = await bench(["--retention", "soon"]);
    expect(retention.code).toBe(2);
    expect(retention.stderr).toContain('--retention="soon"');
    const rate = await bench(["--rate", "0"]);
    expect(rate.code).toBe(2);
    expect(rate.stderr).toContain('--rate="0"');
  });
});

describe("the bench's reading of /metrics", () => {
  it("sums a metric over its label sets, and reads labels holding spaces, braces and quotes", () => {
    const m = parsePrometheus(
      [
        "# HELP rtb_broker_messages_published_total messages confirmed",
        "# TYPE rtb_broker_messages_published_total counter",
        'rtb_broker_messages_published_total{publisher="jobs",service="leader"} 120',
        'rtb_broker_messages_published_total{publisher="inbox",service="leader"} 30',
        'rtb_odd{reason="a \\"quoted\\" } brace"} 2 1700000000000',
        "rtb_db_statements_total 7",
        "rtb_db_statements_total_bucket{le=\"+Inf\"} 99",
      ].join("\n"),
    );
    expect(m.get("rtb_broker_messages_published_total")).toBe(150);
    expect(m.get("rtb_odd")).toBe(2);
    expect(m.get("rtb_db_statements_total")).toBe(7);
  });

  it("counts a labelled counter that had no sample yet as 0, and says n/a (null) without metrics", () => {
    const before = [new Map([["x", 5]]), new Map<string, number>()];
    const after = [new Map([["x", 9]]), new Map([["x", 4]])];
    expect(delta(before, after, "x")).toBe(8);
    expect(delta(before, after, "missing")).toBeNull();
    expect(delta([null, before[1]!], after, "x")).toBeNull();
  });
});
