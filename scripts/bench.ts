/**
 * `npm run bench`: the whole system's throughput on this machine. It starts the api, one
 * leader and N agents (the built-in `noop` handler) as real processes in a database and
 * under broker names of its own, enqueues M units through POST /units, calls GET /go and
 * waits until every unit is terminal; then prints units per second from /go to the last
 * terminal status, p50/p99 latency from dispatch to terminal, database statements,
 * PostgreSQL transactions and broker messages per unit, and each service's peak memory.
 * In the same run it measures the raw limit (bench-raw.ts: the same units through
 * outbox -> jobs -> inbox with plain amqplib, batched as rtb batches them) and prints rtb's
 * share of it in units per second. With --peers it runs BullMQ and pg-boss on as many no-op
 * jobs, round-robin with rtb (bench-peers.ts), and prints rtb's throughput as a multiple of
 * theirs.
 *
 *   npm run bench                                  # 20,000 units, 2 agents: about a minute
 *   npm run bench -- --sizes 10000,100000,1000000  # memory per service as M grows
 *   npm run bench -- --root /tmp/rtb-before        # the services of another checkout
 *   npm run bench -- --retention 5s --duration 120s  # table sizes and throughput with and without pruning
 *   npm run bench -- --rate 100 --duration 30s     # latency of each stage at light load
 *   npm run bench -- --peers                       # rtb, BullMQ and pg-boss, 3 rounds: two to three minutes
 *   npm run bench -- --apis 2                      # two api replicas: what a second one buys
 *   npm run bench -- --workflows 2000,10000        # order workflows (5 steps each) per second, a fan-out of 9,999: 3 minutes
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { runOnce, type BenchSettings, type RunResult } from "./bench-run.ts";
import { printResults } from "./bench-report.ts";
import type { RawResult } from "./bench-raw.ts";
import { interrupt, running } from "./bench-interrupt.ts";
import { printRetention, runRetentionPhase, type Phase, type RetentionSettings } from "./bench-retention.ts";
import { printLatency, runLatency, type LatencySettings } from "./bench-latency.ts";
import { peerRounds, runRounds, type PeerRounds } from "./bench-peers.ts";
import { printWorkflows, runWorkflowBench, type WorkflowSettings } from "./bench-workflows.ts";
import { duration } from "@rtb/runtime";

const repo = fileURLToPath(new URL("..", import.meta.url));

const flags = {
  units: { type: "string", default: "20000" },
  sizes: { type: "string" },
  agents: { type: "string", default: "2" },
  apis: { type: "string", default: "1" },
  concurrency: { type: "string", default: "50" },
  "max-queue": { type: "string", default: "2000" },
  groups: { type: "string", default: "4" },
  "stall-timeout": { type: "string", default: "120" },
  root: { type: "string", default: repo },
  "no-raw": { type: "boolean", default: false },
  retention: { type: "string" },
  duration: { type: "string", default: "120s" },
  "sample-every": { type: "string", default: "10" },
  "vacuum-every": { type: "string" },
  rate: { type: "string" },
  peers: { type: "boolean", default: false },
  rounds: { type: "string", default: "3" },
  "redis-url": { type: "string", default: "redis://127.0.0.1:6379" },
  "bullmq-concurrency": { type: "string", default: "50" },
  "pgboss-workers": { type: "string", default: "2" },
  "pgboss-batch": { type: "string", default: "1000" },
  workflows: { type: "string" },
  "fan-out": { type: "string" },
  "analyze-every": { type: "string" },
  json: { type: "boolean", default: false },
  keep: { type: "boolean", default: false },
  help: { type: "boolean", default: false },
} as const;

const usage = `usage: npm run bench -- [options]

  --units N           units per run (default 20000: about a minute on 2 cores)
  --sizes A,B,...     several runs, one per size (e.g. 10000,100000,1000000); overrides --units
  --agents N          agent processes (default 2)
  --apis N            api replicas on the one database and broker (default 1); requests go to the first
  --concurrency N     RTB_AGENT_CONCURRENCY of each agent (default 50)
  --max-queue N       RTB_BROADCAST_MAX_QUEUE, 1..100000 (default 2000)
  --groups N          groups the units are spread over (default 4)
  --stall-timeout S   give up when no unit finishes for S seconds (default 120)
  --root DIR          the checkout whose services run (default this one), e.g. an older commit
  --no-raw            skip the raw limit: the same units through outbox -> jobs -> inbox with plain
                      amqplib and nothing else, batched as rtb batches them (100 units per outbox
                      message, RTB_JOB_MAX_UNITS per job, one queued report per outbox message, a
                      processing and a success report per job), with rtb's prefetch and at most
                      --max-queue units awaiting their outbox confirm
  --retention D       instead: units finishing at full speed for --duration, twice (RTB_RETENTION=0,
                      then RTB_RETENTION=D, e.g. 5s), printing the tables' sizes over time and the
                      throughput of both phases and their ratio
  --duration D        each phase of --retention, or the arrivals of --rate (default 120s)
  --sample-every S    --retention: table sizes every S seconds (default 10)
  --vacuum-every S    --retention: VACUUM the two tables every S seconds (default: 10 when the
                      server's autovacuum is off, else never; 0: never)
  --rate R            instead: latency at light load, R units/s arriving through POST /units (one
                      per request) for --duration (e.g. --rate 100 --duration 30s), each stage's p50/p99
  --peers             also BullMQ and pg-boss with --units no-op jobs each, round-robin with rtb
                      (rtb, BullMQ, pg-boss, rtb, ...), printing each one's median and rtb's ratio to
                      them; --stall-timeout holds for them too
  --rounds N          --peers: rounds (default 3)
  --redis-url URL     --peers: BullMQ's Redis (default redis://127.0.0.1:6379); none there: BullMQ
                      is skipped, the rest runs
  --bullmq-concurrency N
                      --peers: concurrency of BullMQ's one Worker (default 50)
  --pgboss-workers N  --peers: pg-boss workers (default 2)
  --pgboss-batch N    --peers: batchSize of each pg-boss worker (default 1000)
  --workflows N[,M..] instead: N order workflows (validate -> charge + reserve -> ship -> notify, every
                      step noop) through POST /workflows, then GET /go: workflows/s, steps/s, each
                      workflow's latency; one run per size (e.g. 2000,10000)
  --fan-out C         --workflows: then one workflow on fresh services whose root spawns C noop
                      children and a join, 0 to 9999 (default 9999; 0: skip it)
  --analyze-every S   --workflows: ANALYZE units, unit_deps and workflows every S seconds during the
                      enqueue and the run of the order workflows, and once 1 % of the steps have
                      finished (default: 10 when the server's autovacuum is off, else never; 0:
                      never, only once after the enqueue as the unit run does)
  --json              print the result as JSON (progress still goes to stderr)
  --keep              keep each run's database and queues
  --help`;

let settings: BenchSettings;
let retention: RetentionSettings | null = null;
let latency: LatencySettings | null = null;
let peers: PeerRounds | null = null;
let workflows: WorkflowSettings | null = null;
try {
  const { values: v } = parseArgs({ options: flags, allowPositionals: false });
  if (v.help) {
    console.log(usage);
    process.exit(0);
  }
  const int = (name: string, raw: string | undefined, min: number, max = Number.MAX_SAFE_INTEGER) => {
    const n = Number(raw);
    if (raw === undefined || raw.trim() === "" || !Number.isInteger(n) || n < min || n > max) {
      throw new Error(`--${name}="${String(raw)}": expected an integer from ${min.toLocaleString("en")} to ${max.toLocaleString("en")}`);
    }
    return n;
  };
  const sizes = v.sizes === undefined ? [int("units", v.units, 1, 10_000_000)] : v.sizes.split(",").map((s) => int("sizes", s, 1, 10_000_000));
  const root = resolve(v.root);
  if (!existsSync(join(root, "services/api/src/main.ts"))) throw new Error(`--root="${v.root}": no services/api/src/main.ts there (expected an rtb checkout)`);
  if (!existsSync(join(root, "node_modules/tsx"))) throw new Error(`--root="${v.root}": no node_modules/tsx there (run npm ci in it first)`);
  const durationFlag = (name: string, raw: string | undefined) => {
    const parsed = duration("0").safeParse(raw);
    if (!parsed.success || parsed.data.ms === 0) throw new Error(`--${name}="${String(raw)}": expected a duration such as 5s, 2m or 1h`);
    return parsed.data;
  };
  if (v.retention !== undefined) {
    retention = {
      retention: durationFlag("retention", v.retention),
      durationS: durationFlag("duration", v.duration).ms / 1000,
      sampleEveryS: int("sample-every", v["sample-every"], 1, 3600),
      vacuumEveryS: v["vacuum-every"] === undefined ? null : int("vacuum-every", v["vacuum-every"], 0, 3600),
    };
  }
  if (v.rate !== undefined) {
    if (v.retention !== undefined) throw new Error("--rate and --retention: one at a time");
    latency = { rate: int("rate", v.rate, 1, 100_000), durationS: durationFlag("duration", v.duration).ms / 1000 };
  }
  if (v.peers) {
    if (v.sizes !== undefined) throw new Error("--peers and --sizes: --peers runs --units, once a round");
    if (v.retention !== undefined) throw new Error("--peers and --retention: one at a time");
    if (v.rate !== undefined) throw new Error("--peers and --rate: one at a time");
    const redisUrl = v["redis-url"];
    if (!URL.canParse(redisUrl) || !/^rediss?:$/.test(new URL(redisUrl).protocol)) throw new Error(`--redis-url="${redisUrl}": expected a redis:// or rediss:// URL`);
    peers = peerRounds({
      rounds: int("rounds", v.rounds, 1, 100),
      redisUrl,
      bullmqConcurrency: int("bullmq-concurrency", v["bullmq-concurrency"], 1, 10_000),
      pgbossWorkers: int("pgboss-workers", v["pgboss-workers"], 1, 64),
      pgbossBatch: int("pgboss-batch", v["pgboss-batch"], 1, 100_000),
    });
  }
  if (v.workflows !== undefined) {
    for (const other of ["sizes", "retention", "rate"] as const) if (v[other] !== undefined) throw new Error(`--workflows and --${other}: one at a time`);
    if (v.peers) throw new Error("--workflows and --peers: one at a time");
    if (!existsSync(join(root, "services/api/src/http/workflow-routes.ts"))) throw new Error(`--root="${v.root}": no workflows there (services/api/src/http/workflow-routes.ts)`);
    workflows = {
      sizes: v.workflows.split(",").map((s) => int("workflows", s, 1, 1_000_000)),
      fanOut: v["fan-out"] === undefined ? 9999 : int("fan-out", v["fan-out"], 0, 9999),
      analyzeEveryS: v["analyze-every"] === undefined ? null : int("analyze-every", v["analyze-every"], 0, 3600),
    };
  } else {
    for (const only of ["fan-out", "analyze-every"] as const) if (v[only] !== undefined) throw new Error(`--${only}: only with --workflows`);
  }
  settings = {
    sizes,
    agents: int("agents", v.agents, 1, 64),
    apis: int("apis", v.apis, 1, 8),
    concurrency: int("concurrency", v.concurrency, 1, 10_000),
    maxQueue: int("max-queue", v["max-queue"], 1, 100_000),
    groups: int("groups", v.groups, 1, 100_000),
    stallTimeoutS: int("stall-timeout", v["stall-timeout"], 1),
    root,
    raw: !v["no-raw"],
    json: v.json,
    keep: v.keep,
    ...(await serviceDefaults(root)),
  };
} catch (err) {
  // Flags, and variables the services' config rejects (their message names the variable).
  console.error(`rtb bench: ${(err as Error).message}`);
  process.exit(2);
}

/**
 * What the root's own services will use: whether it has the noop handler (an older checkout
 * runs `simulate` with no work and no failures instead), the leader's and the api's prefetch,
 * and how they batch units (per outbox message, per job while a queue is deep), from their
 * modules and this environment, so the raw path holds as many deliveries in hand and carries
 * as many units per message as rtb does. A bad variable stops here, naming it.
 */
async function serviceDefaults(root: string): Promise<Pick<BenchSettings, "kind" | "leaderPrefetch" | "inboxPrefetch" | "unitsPerMessage" | "jobMaxUnits">> {
  const load = async (path: string) => (await import(pathToFileURL(join(root, path)).href)) as Record<string, unknown>;
  const config = async <T>(path: string, fn: string) => ((await load(path))[fn] as (env: NodeJS.ProcessEnv) => T)(process.env);
  const leader = await config<{ RTB_LEADER_PREFETCH: number; RTB_JOB_MAX_UNITS?: number }>("services/leader/src/config.ts", "loadLeaderConfig");
  const api = await config<{ RTB_INBOX_PREFETCH: number }>("services/api/src/config.ts", "loadApiConfig");
  const perMessage = (await load("services/api/src/dispatcher.ts")).UNITS_PER_MESSAGE;
  const hasNoop = readFileSync(join(root, "services/agent/src/builtin-handlers.ts"), "utf8").includes('"noop"');
  return {
    kind: hasNoop ? "noop" : "simulate",
    leaderPrefetch: leader.RTB_LEADER_PREFETCH,
    inboxPrefetch: api.RTB_INBOX_PREFETCH,
    // Older checkouts: 100 units per outbox message since the first commit (not exported
    // before this one), and one unit per job before RTB_JOB_MAX_UNITS.
    unitsPerMessage: typeof perMessage === "number" ? perMessage : 100,
    jobMaxUnits: leader.RTB_JOB_MAX_UNITS ?? 1,
  };
}

const say = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);
process.on("SIGINT", () => interrupt("SIGINT", say));
process.on("SIGTERM", () => interrupt("SIGTERM", say));
process.on("SIGHUP", () => interrupt("SIGHUP", say));

const git = (args: string[]) => {
  try {
    return execFileSync("git", ["-C", settings.root, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return null;
  }
};
const commit = git(["rev-parse", "--short", "HEAD"]);
// Changes not committed yet under the services' code make the commit only an approximation.
const dirty = (git(["status", "--porcelain", "--untracked-files=normal", "--", "services", "db"]) ?? "") !== "";

if (settings.kind !== "noop") say(`${settings.root} has no noop handler: running kind "simulate" with 0 ms of work and no failures instead`);
if (retention) {
  const phases: Phase[] = [];
  try {
    for (const setting of [{ text: "0", ms: 0 }, retention.retention]) phases.push(await runRetentionPhase(settings, retention, setting, say));
  } catch (err) {
    if (running.interrupted) await new Promise(() => {});
    say(`failed: ${(err as Error).message}`);
    process.exitCode = 1;
  }
  if (phases.length > 0) printRetention(settings, retention, phases, settings.json);
  process.exit(process.exitCode ?? 0);
}
if (latency) {
  try {
    printLatency(settings, await runLatency(settings, latency, say), settings.json);
  } catch (err) {
    if (running.interrupted) await new Promise(() => {});
    say(`failed: ${(err as Error).message}`);
    process.exitCode = 1;
  }
  process.exit(process.exitCode ?? 0);
}
if (workflows) {
  const { results, failure } = await runWorkflowBench(settings, workflows, say);
  if (failure !== null) {
    if (running.interrupted) await new Promise(() => {});
    say(`failed: ${(failure as Error).message}`);
    process.exitCode = 1;
  }
  if (results.runs.length > 0 || results.fanOut) printWorkflows({ settings, commit, dirty, workflows, results }, settings.json);
  process.exit(process.exitCode ?? 0);
}
const runs: RunResult[] = [];
let exitCode = 0;
try {
  if (peers) await runRounds(settings, peers, runs, say);
  else for (const [i, units] of settings.sizes.entries()) runs.push(await runOnce(settings, units, { raw: settings.raw && i === 0, say }));
} catch (err) {
  // Interrupted: the signal handler stops and drops everything, then exits.
  if (running.interrupted) await new Promise(() => {});
  say(`failed: ${(err as Error).message}`);
  exitCode = 1;
}
// The raw limit is measured once, in the first run.
const raw: RawResult | null = runs.find((r) => r.raw)?.raw ?? null;
if (runs.length > 0) printResults({ settings, commit, dirty, runs, raw, peers }, settings.json);
process.exit(exitCode);
