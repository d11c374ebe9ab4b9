import { Redis } from "ioredis";
import pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { killAll, runCommand, serversEnv, testRedis, testServers } from "@rtb/testing";

/**
 * `npm run bench -- --peers`, tiny: rtb, BullMQ and pg-boss on 300 no-op units or jobs, one
 * round. Speed is not asserted (the machine is shared); that every system's figure is there,
 * that rtb's ratios are made of them, and that nothing is left behind, is. Without a Redis
 * BullMQ is skipped with a line saying so, and the rest still runs.
 */
let redisUrl: string;
let stopRedis: () => Promise<void> = async () => {};
beforeAll(async () => {
  const redis = await testRedis();
  redisUrl = redis.url;
  stopRedis = redis.stop;
}, 120_000);
afterAll(() => stopRedis());
const small = ["--units", "300", "--rounds", "1", "--no-raw", "--agents", "1", "--concurrency", "20", "--max-queue", "100"];

/** The bench with `args`: its exit code, stdout apart (the report), and all its output. */
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

afterEach(killAll);

describe("npm run bench -- --peers", () => {
  it("measures rtb, BullMQ and pg-boss on the same jobs, with medians and rtb's ratios, and drops their places", async () => {
    const { code, stdout, output } = await bench(["--peers", ...small, "--redis-url", redisUrl, "--json"]);
    expect(code, output).toBe(0);
    const out = JSON.parse(stdout);
    expect(out.runs).toHaveLength(1);
    expect(out.runs[0]).toMatchObject({ units: 300, terminal: 300 });
    const { peers } = out;
    expect(peers.settings).toMatchObject({ rounds: 1, bullmqConcurrency: 50, pgbossWorkers: 2, pgbossBatch: 1000 });
    expect(peers.bullmq).toMatchObject({ version: "6.7.0", skipped: null });
    expect(peers.pgboss).toMatchObject({ version: "10.4.2" });
    for (const peer of [peers.bullmq, peers.pgboss]) {
      expect(peer.rounds).toHaveLength(1);
      const [round] = peer.rounds;
      expect(round.jobs).toBe(300);
      expect(round.seconds).toBeGreaterThan(0);
      expect(round.jobsPerSec).toBeCloseTo(300 / round.seconds, 6);
      // One round: the median is that round.
      expect(peer.medianJobsPerSec).toBe(round.jobsPerSec);
    }
    expect(peers.rtb.medianUnitsPerSec).toBe(out.runs[0].unitsPerSec);
    expect(peers.ratio.rtbToBullmq).toBeCloseTo(out.runs[0].unitsPerSec / peers.bullmq.medianJobsPerSec, 6);
    expect(peers.ratio.rtbToPgboss).toBeCloseTo(out.runs[0].unitsPerSec / peers.pgboss.medianJobsPerSec, 6);

    // Nothing left behind: pg-boss's database, BullMQ's keys, rtb's database.
    expect(await databaseExists(peers.pgboss.rounds[0].place)).toBe(false);
    expect(await databaseExists(out.runs[0].database)).toBe(false);
    const redis = new Redis(redisUrl);
    try {
      expect(await redis.keys(`${peers.bullmq.rounds[0].place}:*`)).toEqual([]);
    } finally {
      redis.disconnect();
    }
  }, 240_000);

  it("without a Redis, says BullMQ is skipped and still runs rtb and pg-boss", async () => {
    const { code, stdout, output } = await bench(["--peers", ...small, "--redis-url", "redis://127.0.0.1:1"]);
    expect(code, output).toBe(0);
    expect(output).toContain("BullMQ skipped: no Redis at redis://127.0.0.1:1 (--redis-url)");
    // The table of rounds: rtb's and pg-boss's figures, BullMQ's skipped; the ratio to pg-boss alone.
    expect(stdout).toMatch(/^1\s+[\d,]+\s+skipped\s+[\d,]+$/m);
    expect(stdout).toMatch(/^median\s+[\d,]+\s+skipped\s+[\d,]+$/m);
    expect(stdout).toMatch(/^rtb \/ BullMQ\s+n\/a \(BullMQ skipped\)$/m);
    expect(stdout).toMatch(/^rtb \/ pg-boss\s+\d+\.\d\d$/m);
    expect(stdout).toMatch(/^ {2}rtb {8}[\d,]+ units\/s: 300 terminal/m);
  }, 240_000);

  it("refuses --peers with --sizes, --retention or --rate, and a --redis-url that is not one, with exit code 2", async () => {
    const sizes = await bench(["--peers", "--sizes", "100,200"]);
    expect(sizes.code).toBe(2);
    expect(sizes.output).toContain("--peers and --sizes");
    const retention = await bench(["--peers", "--retention", "5s"]);
    expect(retention.code).toBe(2);
    expect(retention.output).toContain("--peers and --retention");
    const rate = await bench(["--peers", "--rate", "100"]);
    expect(rate.code).toBe(2);
    expect(rate.output).toContain("--peers and --rate");
    const url = await bench(["--peers", "--redis-url", "http://127.0.0.1:6379"]);
    expect(url.code).toBe(2);
    expect(url.output).toContain('--redis-url="http://127.0.0.1:6379"');
    const rounds = await bench(["--peers", "--rounds", "0"]);
    expect(rounds.code).toBe(2);
    expect(rounds.output).toContain('--rounds="0"');
  });
});
