/**
 * One `npm run bench` run of M units: a scratch place, the services as processes, the
 * units enqueued, (the raw limit,) GET /go, every unit terminal, the figures, and everything
 * stopped and dropped again.
 */
import { performance } from "node:perf_hooks";
import pg from "pg";
import { connectionOptions } from "@rtb/db";
import { brokerUrl } from "@rtb/runtime";
import { running } from "./bench-interrupt.ts";
import { autovacuumOn, committedTransactions, delta, runFigures, scrape, untilNoSessions } from "./bench-measure.ts";
import { deleteRawQueues, rawLine, runRaw, type RawResult } from "./bench-raw.ts";
import { benchServiceEnv, peakRssMiB, readyWithin, startService, stopAll, type ServiceProc } from "./bench-services.ts";
import { scratchPlace, type ScratchPlace } from "./scratch-place.ts";

export interface BenchSettings {
  sizes: number[];
  /** api processes (replicas on the one database and broker); the first takes the requests. */
  apis: number;
  agents: number;
  concurrency: number;
  maxQueue: number;
  groups: number;
  stallTimeoutS: number;
  root: string;
  raw: boolean;
  json: boolean;
  keep: boolean;
  /** `noop`, or `simulate` with no work where the root has no noop handler. */
  kind: "noop" | "simulate";
  leaderPrefetch: number;
  inboxPrefetch: number;
  /** The root's batching, which the raw path copies: units per outbox message, and RTB_JOB_MAX_UNITS. */
  unitsPerMessage: number;
  jobMaxUnits: number;
}

export interface RunResult {
  units: number;
  database: string;
  brokerPrefix: string;
  enqueue: { seconds: number; unitsPerSec: number };
  terminal: number;
  success: number;
  error: number;
  /** Units dispatched more than once (retried or re-published). */
  redispatched: number;
  /** From GET /go to the last terminal status. */
  seconds: number;
  unitsPerSec: number;
  latencyMs: { p50: number; p99: number };
  perUnit: {
    /** The api's rtb_db_statements_total; null when the api has no metrics. */
    dbStatements: number | null;
    /** pg_stat_database.xact_commit of the run's database. */
    pgTransactions: number;
    /** rtb_broker_messages_published_total of every service; null when one has no metrics. */
    brokerMessages: number | null;
    /** rtb_broker_confirm_waits_total of every service: the times a service waited for confirms (several at once count once). */
    confirmWaits: number | null;
  };
  /** Units per job message, the mean over the run (the leader's rtb_leader_units_per_job); null without its metrics. */
  unitsPerJob: number | null;
  /** VmHWM per service, MiB. */
  peakMemoryMiB: Record<string, number | null>;
  /** The raw limit, when it was measured in this run. */
  raw: RawResult | null;
}

// PostgreSQL 15 publishes an idle backend's last transaction counts up to 10 s late.
export const STATS_QUIET_MS = 11_000;

/**
 * The api, one leader and `s.agents` agents of the root's checkout, as processes (not yet
 * ready). The agents serve `kinds` (default: `s.kind`); `simulate` among them works 0 ms and
 * never fails.
 */
export function startSystem(s: BenchSettings, env: Record<string, string>, kinds: readonly string[] = [s.kind]): ServiceProc[] {
  const work: Record<string, string> = kinds.includes("simulate") ? { RTB_AGENT_WORK_MIN_MS: "0", RTB_AGENT_WORK_MAX_MS: "0", RTB_AGENT_ERROR_RATE: "0" } : {};
  const metricsPort = { RTB_METRICS_PORT: "127.0.0.1:0" };
  return [
    startService(s.root, "api", "api", { ...env, RTB_API_ID: "api" }),
    ...Array.from({ length: s.apis - 1 }, (_, i) => startService(s.root, `api-${i + 2}`, "api", { ...env, RTB_API_ID: `api-${i + 2}` })),
    startService(s.root, "leader", "leader", { ...env, ...metricsPort, RTB_LEADER_ID: "leader-1" }),
    ...Array.from({ length: s.agents }, (_, i) =>
      startService(s.root, `agent-${i + 1}`, "agent", {
        ...env,
        ...metricsPort,
        ...work,
        RTB_AGENT_ID: `agent-${i + 1}`,
        RTB_AGENT_KINDS: kinds.join(","),
        RTB_AGENT_CONCURRENCY: String(s.concurrency),
      }),
    ),
  ];
}

/**
 * One run's scratch place and its services (startSystem, with `env` added): the place is
 * dropped (unless --keep) and the services stopped by `end()`, or by the signal handler on
 * Ctrl-C (bench-interrupt.ts). `alsoDrop` removes whatever else the run made in the place;
 * `kinds` are the agents' kinds (startSystem), whose job queues are dropped with it.
 */
export function startBenchRun(
  s: BenchSettings,
  say: (msg: string) => void,
  opts: { env?: Record<string, string>; alsoDrop?: (place: ScratchPlace) => Promise<void>; kinds?: readonly string[] } = {},
) {
  const kinds = opts.kinds ?? [s.kind];
  const place = scratchPlace("bench");
  const cleanup = async () => {
    if (s.keep) return say(`kept database ${place.dbName} and broker names ${place.prefix}*`);
    await place.drop([...kinds]);
    await opts.alsoDrop?.(place);
  };
  running.cleanups.push(cleanup);
  const services = startSystem(s, benchServiceEnv({ dbName: place.dbName, prefix: place.prefix, maxQueue: s.maxQueue }, opts.env), kinds);
  running.services = services;
  return {
    place,
    services,
    async end(): Promise<void> {
      if (running.interrupted) return;
      await stopAll(services);
      running.services = [];
      running.cleanups.splice(running.cleanups.indexOf(cleanup), 1);
      await cleanup();
    },
  };
}

export async function runOnce(s: BenchSettings, units: number, opts: { raw: boolean; say: (msg: string) => void }): Promise<RunResult> {
  const { say } = opts;
  const run = startBenchRun(s, say, { alsoDrop: (place) => deleteRawQueues(brokerUrl(place.servers), place.prefix) });
  const { place, services } = run;
  const { servers, dbName, prefix } = place;
  const amqpUrl = brokerUrl(servers);
  const admin = connectionOptions({ ...servers, RTB_DB_POOL_SIZE: 1 }, "postgres");
  const alive = () => {
    const gone = services.find((p) => !p.running());
    if (gone) throw new Error(`${gone.name} exited during the run; its last lines:\n${gone.tail()}`);
  };

  try {
    say(`${units.toLocaleString("en")} units: starting ${s.apis === 1 ? "the api" : `${s.apis} apis`}, a leader and ${s.agents} agent(s) from ${s.root} (database ${dbName})`);
    const [apiReady] = await Promise.all(services.map((p) => readyWithin(p, 120_000)));
    const base = String(apiReady!.url).replace(/\/$/, "");
    const getState = async (): Promise<any> => {
      const res = await fetch(`${base}/`, { headers: { accept: "application/json" }, signal: AbortSignal.timeout(10_000) });
      if (!res.ok) throw new Error(`GET / answered ${res.status}`);
      return res.json();
    };

    // ---- enqueue: POST /units, batches of up to 10,000 (the endpoint's default limit), two at once
    const t0 = performance.now();
    let next = 0;
    const producer = async () => {
      while (next < units) {
        const from = next;
        const n = Math.min(10_000, units - from);
        next += n;
        const body = JSON.stringify(Array.from({ length: n }, (_, i) => ({ kind: s.kind, group: `g-${(from + i) % s.groups}` })));
        const res = await fetch(`${base}/units`, { method: "POST", headers: { "content-type": "application/json" }, body });
        if (res.status !== 201) throw new Error(`POST /units answered ${res.status}: ${(await res.text()).slice(0, 300)}`);
        await res.arrayBuffer();
      }
    };
    await Promise.all([producer(), producer()]);
    const enqueueS = (performance.now() - t0) / 1000;
    const quietFrom = Date.now();
    say(`enqueued in ${enqueueS.toFixed(1)} s`);
    if (await analyzeWithoutAutovacuum(connectionOptions({ ...servers, RTB_DB_POOL_SIZE: 1 }, dbName))) say("ANALYZE units (autovacuum is off: it would have analyzed them by now)");

    // ---- the raw limit, while the services idle (and PostgreSQL's counts of the enqueue settle)
    let raw: RawResult | null = null;
    if (opts.raw) {
      say(`raw limit: ${units.toLocaleString("en")} units through outbox -> jobs -> inbox with plain amqplib, batched as rtb batches them`);
      raw = await runRaw({
        url: amqpUrl,
        prefix,
        queueType: servers.RTB_BROKER_QUEUE_TYPE,
        units,
        agents: s.agents,
        leaderPrefetch: s.leaderPrefetch,
        agentPrefetch: s.concurrency,
        inboxPrefetch: s.inboxPrefetch,
        window: s.maxQueue,
        unitsPerMessage: s.unitsPerMessage,
        // A full-speed run keeps the job queue deep, so rtb's leader sends jobs of the most units.
        jobUnits: s.jobMaxUnits,
      });
      say(`raw: ${rawLine(raw)} (${raw.seconds.toFixed(1)} s)`);
    }
    const quietLeft = STATS_QUIET_MS - (Date.now() - quietFrom);
    if (quietLeft > 0) await new Promise((r) => setTimeout(r, quietLeft));
    alive();

    // ---- the run
    const metricsUrls = () => services.map((p) => p.metricsUrl());
    const before = await Promise.all(metricsUrls().map(scrape));
    const xactBefore = await committedTransactions(admin, dbName);
    const go = await fetch(`${base}/go`);
    if (!go.ok) throw new Error(`GET /go answered ${go.status}: ${await go.text()}`);
    await go.arrayBuffer();
    say("GET /go");
    const started = Date.now();
    let terminal = 0;
    let progressAt = Date.now();
    let saidAt = Date.now();
    for (;;) {
      await new Promise((r) => setTimeout(r, 500));
      alive();
      const state = await getState();
      const c = state.counts as Record<string, number>;
      const now = (c.success ?? 0) + (c.error ?? 0) + (c.cancelled ?? 0);
      if (now > terminal) progressAt = Date.now();
      terminal = now;
      if (terminal >= units) break;
      if (Date.now() - progressAt > s.stallTimeoutS * 1000) {
        throw new Error(`no unit finished for ${s.stallTimeoutS} s (--stall-timeout); GET /: ${JSON.stringify(state.counts)}; ${services.map((p) => `\n--- ${p.name}:\n${p.tail()}`).join("")}`);
      }
      if (Date.now() - saidAt >= 5_000) {
        saidAt = Date.now();
        say(`${terminal.toLocaleString("en")} / ${units.toLocaleString("en")} terminal (${Math.round(terminal / ((Date.now() - started) / 1000)).toLocaleString("en")} units/s so far)`);
      }
    }
    const after = await Promise.all(metricsUrls().map(scrape));
    const peakMemoryMiB = Object.fromEntries(services.map((p) => [p.name, peakRssMiB(p.pid)]));

    // ---- stop; the backends exit and publish their last counts; then the figures
    await stopAll(services);
    await untilNoSessions(admin, dbName);
    const xacts = (await committedTransactions(admin, dbName)) - xactBefore;
    const f = await runFigures(connectionOptions({ ...servers, RTB_DB_POOL_SIZE: 1 }, dbName));
    const apisAt = services.flatMap((p, i) => (p.name === "api" || p.name.startsWith("api-") ? [i] : []));
    const statements = delta(apisAt.map((i) => before[i]!), apisAt.map((i) => after[i]!), "rtb_db_statements_total");
    const published = delta(before, after, "rtb_broker_messages_published_total");
    const waits = delta(before, after, "rtb_broker_confirm_waits_total");
    const leaderAt = services.findIndex((p) => p.name === "leader");
    const jobUnits = delta([before[leaderAt]!], [after[leaderAt]!], "rtb_leader_units_per_job_sum");
    const jobs = delta([before[leaderAt]!], [after[leaderAt]!], "rtb_leader_units_per_job_count");
    const result: RunResult = {
      units,
      database: dbName,
      brokerPrefix: prefix,
      enqueue: { seconds: enqueueS, unitsPerSec: units / enqueueS },
      terminal: f.terminal,
      success: f.success,
      error: f.error,
      redispatched: f.redispatched,
      seconds: f.seconds,
      unitsPerSec: f.terminal / f.seconds,
      latencyMs: { p50: f.p50Ms, p99: f.p99Ms },
      perUnit: {
        dbStatements: statements === null ? null : statements / units,
        pgTransactions: xacts / units,
        brokerMessages: published === null ? null : published / units,
        confirmWaits: waits === null ? null : waits / units,
      },
      unitsPerJob: jobUnits === null || !jobs ? null : jobUnits / jobs,
      peakMemoryMiB,
      raw,
    };
    say(`done: ${Math.round(result.unitsPerSec).toLocaleString("en")} units/s over ${result.seconds.toFixed(1)} s`);
    return result;
  } finally {
    await run.end();
  }
}

/**
 * With autovacuum off (this repository's CI server), PostgreSQL never learns what the enqueue
 * put in `units`: its planner keeps the estimates of an empty table and reads the units of a
 * status batch by a sequential scan, a cost that grows with the table. Autovacuum would have
 * analyzed it after the first 10 % new rows; the bench does it once, after the enqueue (the
 * workflow run: `units`, `unit_deps` and `workflows`). Returns whether it did.
 */
export async function analyzeWithoutAutovacuum(options: pg.ClientConfig, tables: readonly string[] = ["units"]): Promise<boolean> {
  const client = new pg.Client(options);
  await client.connect();
  try {
    if (await autovacuumOn(client)) return false;
    await client.query(`ANALYZE ${tables.join(", ")}`);
    return true;
  } finally {
    await client.end();
  }
}
