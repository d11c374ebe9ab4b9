/**
 * `npm run bench -- --workflows N`: the whole system's throughput on workflows. It starts the
 * api, one leader and `--agents` agents (the built-in `noop` handler) as real processes, as the
 * unit benchmark does, enqueues N order workflows (the order example: validate -> charge and
 * reserve side by side -> ship -> notify, every step kind `noop`) through POST /workflows,
 * calls GET /go and waits until every step is terminal; then prints workflows per second from
 * GET /go to the last workflow finished, steps (units) per second, each workflow's latency
 * (enqueue -> finished, and its first step's dispatch -> finished), the handoff from a
 * dependency's success to its dependent's dispatch, and the unit benchmark's figures per step
 * (statements, transactions, broker messages, confirm waits, peak memory).
 *
 * The workflows go through POST /workflows, one a request, a few requests at once: the path a
 * producer takes, validation and the DAG check included, as the unit benchmark goes through
 * POST /units. Each request is one transaction (the endpoint's all-or-nothing); batching many
 * workflows into one transaction through enqueueWorkflow would enqueue faster but is not what a
 * producer can do, and the enqueue is not in the measured span anyway (it is done before
 * GET /go, and printed apart).
 *
 * Where the server's autovacuum is off, the bench ANALYZEs the workflow tables every 10 s during
 * the enqueue and the run, and once as soon as 1 % of the steps have finished (--analyze-every):
 * with the statistics of the enqueue alone, 10,000 workflows ran at 58 steps/s instead of
 * 2,700 (analyzer() says why).
 *
 * With --fan-out C (default 9,999, the most one spawn may hold with its join; 0: skipped), the
 * runs are followed by one more on fresh services: one workflow whose root step (the built-in
 * `simulate`, 0 ms of work) spawns C `noop` children and a `noop` join that waits for them all,
 * timed from the root's dispatch to its first child's (the spawn) and from there to the
 * workflow finished.
 */
import { performance } from "node:perf_hooks";
import pg from "pg";
import { connectionOptions } from "@rtb/db";
import { running } from "./bench-interrupt.ts";
import { autovacuumOn, committedTransactions, delta, runFigures, scrape, untilNoSessions } from "./bench-measure.ts";
import { analyzeWithoutAutovacuum, STATS_QUIET_MS, startBenchRun, type BenchSettings } from "./bench-run.ts";
import { peakRssMiB, readyWithin, stopAll } from "./bench-services.ts";

export interface WorkflowSettings {
  /** Order workflows per run, one run per size. */
  sizes: number[];
  /** Children of the fan-out run (after the first size); 0: no fan-out run. */
  fanOut: number;
  /** Seconds between the bench's own ANALYZEs during the enqueue and the run; null: 10 when the server's autovacuum is off, else never; 0: never. */
  analyzeEveryS: number | null;
}

/** The tables a workflow run changes, analyzed as autovacuum would where it is off. */
const ANALYZED = ["units", "unit_deps", "workflows"];

/**
 * ANALYZE the workflow tables every `everyS` seconds (0: never) on a connection of its own,
 * one transaction each time, and at once when asked (`soon()`), until stop(). Where autovacuum
 * is off nothing else refreshes the planner's statistics while a run changes every row, and a
 * fresh database's statistics lag behind those of a database with history: the enqueue's say
 * that no unit has succeeded, and the claim's read of a step's dependencies' results (depsResults in
 * db/src/workflows.ts) is then planned as a walk of every finished unit per dependency
 * (units_finished), a cost that grows with each step finished. Measured at 10,000 workflows:
 * 58 steps/s with no ANALYZE after the enqueue's; 1,400-1,500 against 2,700-2,900 in runs whose
 * first ANALYZE with successes in the table came up to 10 s after GET /go; every 2 s instead,
 * 1,900-2,300, each ANALYZE taking 0.3-0.4 s of PostgreSQL's time. Hence one as soon as the
 * first steps have succeeded (any count well above one gives the plan that probes by id), and
 * every 10 s for the rest.
 */
function analyzer(conn: pg.ClientConfig, everyS: number) {
  let ran = 0;
  let ms = 0;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let client: pg.Client | null = null;
  let current: Promise<void> = Promise.resolve();
  const tick = () => {
    current = (async () => {
      if (stopped) return;
      if (!client) {
        client = new pg.Client(conn);
        await client.connect();
      }
      const t0 = performance.now();
      // One transaction (ANALYZE of several tables outside one commits one per table), so the
      // run's count of transactions can leave the bench's own out exactly.
      await client.query(`BEGIN; ANALYZE ${ANALYZED.join(", ")}; COMMIT`);
      ms += performance.now() - t0;
      ran++;
    })()
      .catch(() => {})
      .finally(() => {
        if (!stopped) timer = setTimeout(tick, everyS * 1000);
      });
  };
  if (everyS > 0) timer = setTimeout(tick, everyS * 1000);
  return {
    /** ANALYZEs committed so far (each one transaction). */
    ran: () => ran,
    /** ANALYZE now (after the one in progress, if any), then on the clock again. */
    soon(): void {
      if (stopped || everyS === 0) return;
      clearTimeout(timer);
      void current.then(() => {
        clearTimeout(timer);
        tick();
      });
    },
    async stop(): Promise<{ runs: number; seconds: number }> {
      stopped = true;
      clearTimeout(timer);
      await current;
      const c = client as pg.Client | null;
      client = null;
      await c?.end().catch(() => {});
      return { runs: ran, seconds: ms / 1000 };
    },
  };
}

/** --analyze-every as given, or its default: 10 s where the server's autovacuum is off, else never. */
async function analyzeEvery(conn: pg.ClientConfig, w: WorkflowSettings): Promise<number> {
  if (w.analyzeEveryS !== null) return w.analyzeEveryS;
  const client = new pg.Client(conn);
  await client.connect();
  try {
    return (await autovacuumOn(client)) ? 0 : 10;
  } finally {
    await client.end();
  }
}

/** POST /workflows requests in flight during the enqueue. */
export const ENQUEUE_IN_FLIGHT = 4;
/** The order example's steps, in levels: validate, then charge and reserve, then ship, then notify. */
export const ORDER_STEPS = 5;
export const ORDER_SHAPE = "validate -> charge + reserve -> ship -> notify";

/** The order example of POST /workflows (test/system/workflows.test.ts), every step of `kind`. */
export function orderWorkflow(kind: string, group: string) {
  return {
    name: "order",
    group,
    steps: [
      { step: "validate", kind },
      { step: "charge", kind, dependsOn: ["validate"] },
      { step: "reserve", kind, dependsOn: ["validate"] },
      { step: "ship", kind, dependsOn: ["charge", "reserve"] },
      { step: "notify", kind, dependsOn: ["ship"] },
    ],
  };
}

export interface Percentiles3 {
  p50: number;
  p95: number;
  p99: number;
}

export interface WorkflowRun {
  workflows: number;
  steps: number;
  database: string;
  brokerPrefix: string;
  enqueue: { seconds: number; workflowsPerSec: number; inFlight: number };
  /**
   * The bench's ANALYZE of units, unit_deps and workflows: every so many seconds (0: never), how
   * many ran from the enqueue to the end and their time; those after GET /go are left out of
   * `perStep.pgTransactions`.
   */
  analyze: { everyS: number; runs: number; seconds: number };
  /** Workflows per status at the end (every one success, with noop). */
  finished: { success: number; error: number; cancelled: number; running: number };
  /** Steps with a terminal status, and of those in success and error. */
  terminal: number;
  success: number;
  error: number;
  /** Steps dispatched more than once (retried or re-published). */
  redispatched: number;
  /** From GET /go to the last workflow's finished_at (the transaction that finished it). */
  seconds: number;
  workflowsPerSec: number;
  /** From GET /go to the last step's terminal event, as the unit benchmark's units/s. */
  stepSeconds: number;
  stepsPerSec: number;
  latencyMs: {
    /** workflows.created_at -> finished_at: includes the enqueue and the wait before GET /go (STATS_QUIET_MS at least). */
    enqueueToFinished: Percentiles3;
    /** The later of created_at and GET /go -> finished_at: the time in the backlog once dispatch is on, and the run. */
    goToFinished: Percentiles3;
    /** Its first step's first dispatch -> finished_at: the workflow's own run through its four levels. */
    startToFinished: Percentiles3;
    /** A step's dispatch -> terminal, as the unit benchmark's latency. */
    stepDispatchToTerminal: { p50: number; p99: number };
    /** A dependent step: its last dependency's success (the agent's event) -> its own first dispatch. */
    handoff: Percentiles3;
    /** Of that: made pending (in the transaction that applied the success) -> dispatched (the next top-up). */
    unblockedToDispatched: Percentiles3;
  };
  perStep: {
    dbStatements: number | null;
    pgTransactions: number;
    brokerMessages: number | null;
    confirmWaits: number | null;
  };
  unitsPerJob: number | null;
  peakMemoryMiB: Record<string, number | null>;
}

export interface FanOutRun {
  database: string;
  brokerPrefix: string;
  children: number;
  /** Every step of the workflow: root, children and join. */
  steps: number;
  status: string;
  /** Steps in success. */
  success: number;
  /** POST /workflows -> finished. */
  totalSeconds: number;
  /**
   * The root's first dispatch -> the first child's: the root's run and report, the inbox
   * transaction that applies its success with the spawn (writing the children, the join and
   * their edges), and the top-up after it.
   */
  spawnSeconds: number;
  /** The first child's dispatch -> the workflow finished (every child and the join). */
  seconds: number;
  /** Children and join over `seconds`. */
  stepsPerSec: number;
}

export interface WorkflowResults {
  runs: WorkflowRun[];
  fanOut: FanOutRun | null;
}

/** Every run, then the fan-out; what was measured before a failure is returned with the error. */
export async function runWorkflowBench(s: BenchSettings, w: WorkflowSettings, say: (msg: string) => void): Promise<{ results: WorkflowResults; failure: unknown }> {
  const results: WorkflowResults = { runs: [], fanOut: null };
  try {
    for (const n of w.sizes) results.runs.push(await runWorkflowsOnce(s, w, n, say));
    if (w.fanOut > 0) results.fanOut = await runFanOut(s, w, say);
    return { results, failure: null };
  } catch (err) {
    return { results, failure: err };
  }
}

async function post(base: string, path: string, body: unknown): Promise<any> {
  const res = await fetch(`${base}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  if (res.status !== 201) throw new Error(`POST ${path} answered ${res.status}: ${(await res.text()).slice(0, 300)}`);
  return res.json();
}

export async function runWorkflowsOnce(s: BenchSettings, w: WorkflowSettings, n: number, say: (msg: string) => void): Promise<WorkflowRun> {
  const run = startBenchRun(s, say);
  const { place, services } = run;
  const { servers, dbName, prefix } = place;
  const admin = connectionOptions({ ...servers, RTB_DB_POOL_SIZE: 1 }, "postgres");
  const own = connectionOptions({ ...servers, RTB_DB_POOL_SIZE: 1 }, dbName);
  const steps = n * ORDER_STEPS;
  const alive = () => {
    const gone = services.find((p) => !p.running());
    if (gone) throw new Error(`${gone.name} exited during the run; its last lines:\n${gone.tail()}`);
  };
  let analyzing: ReturnType<typeof analyzer> | null = null;
  try {
    say(`${n.toLocaleString("en")} order workflows (${steps.toLocaleString("en")} steps): starting the api, a leader and ${s.agents} agent(s) from ${s.root} (database ${dbName})`);
    const [apiReady] = await Promise.all(services.map((p) => readyWithin(p, 120_000)));
    const base = String(apiReady!.url).replace(/\/$/, "");
    const everyS = await analyzeEvery(own, w);
    if (everyS > 0) say(`ANALYZE ${ANALYZED.join(", ")} every ${everyS} s during the enqueue and the run, and once 1 % of the steps have finished (--analyze-every)`);
    analyzing = analyzer(own, everyS);

    // ---- enqueue: POST /workflows, one workflow a request, a few at once
    const t0 = performance.now();
    let next = 0;
    let saidAt = Date.now();
    const producer = async () => {
      while (next < n) {
        const i = next++;
        await post(base, "/workflows", orderWorkflow(s.kind, `g-${i % s.groups}`));
        if (Date.now() - saidAt >= 5_000) {
          saidAt = Date.now();
          say(`enqueued ${next.toLocaleString("en")} / ${n.toLocaleString("en")} workflows`);
        }
      }
    };
    await Promise.all(Array.from({ length: ENQUEUE_IN_FLIGHT }, producer));
    const enqueueS = (performance.now() - t0) / 1000;
    const quietFrom = Date.now();
    say(`enqueued in ${enqueueS.toFixed(1)} s (${Math.round(n / enqueueS).toLocaleString("en")} workflows/s)`);
    if (await analyzeWithoutAutovacuum(own, ["units", "unit_deps", "workflows"])) say("ANALYZE units, unit_deps, workflows (autovacuum is off: it would have analyzed them by now)");
    const quietLeft = STATS_QUIET_MS - (Date.now() - quietFrom);
    if (quietLeft > 0) await new Promise((r) => setTimeout(r, quietLeft));
    alive();

    // ---- the run
    const metricsUrls = () => services.map((p) => (p.name === "api" ? `${base}/metrics` : p.metricsUrl()));
    const before = await Promise.all(metricsUrls().map(scrape));
    const xactBefore = await committedTransactions(admin, dbName);
    const analyzedBefore = analyzing.ran();
    const go = await fetch(`${base}/go`);
    if (!go.ok) throw new Error(`GET /go answered ${go.status}: ${await go.text()}`);
    await go.arrayBuffer();
    say("GET /go");
    const started = Date.now();
    let terminal = 0;
    let progressAt = Date.now();
    let refreshed = false;
    saidAt = Date.now();
    for (;;) {
      await new Promise((r) => setTimeout(r, 500));
      alive();
      const res = await fetch(`${base}/`, { headers: { accept: "application/json" }, signal: AbortSignal.timeout(10_000) });
      if (!res.ok) throw new Error(`GET / answered ${res.status}`);
      const state = (await res.json()) as { counts: Record<string, number> };
      const c = state.counts;
      const now = (c.success ?? 0) + (c.error ?? 0) + (c.cancelled ?? 0);
      if (now > terminal) progressAt = Date.now();
      terminal = now;
      if (terminal >= steps) break;
      if (!refreshed && terminal >= steps / 100) {
        refreshed = true;
        analyzing.soon();
      }
      if (Date.now() - progressAt > s.stallTimeoutS * 1000) {
        throw new Error(`no step finished for ${s.stallTimeoutS} s (--stall-timeout); GET /: ${JSON.stringify(c)}; ${services.map((p) => `\n--- ${p.name}:\n${p.tail()}`).join("")}`);
      }
      if (Date.now() - saidAt >= 5_000) {
        saidAt = Date.now();
        const secs = (Date.now() - started) / 1000;
        say(`${terminal.toLocaleString("en")} / ${steps.toLocaleString("en")} steps terminal (${Math.round(terminal / secs).toLocaleString("en")} steps/s so far)`);
      }
    }
    const after = await Promise.all(metricsUrls().map(scrape));
    const peakMemoryMiB = Object.fromEntries(services.map((p) => [p.name, peakRssMiB(p.pid)]));
    const analyzed = await analyzing.stop();
    // The bench's ANALYZEs since the count was read (one transaction each) are not rtb's.
    const ownXacts = analyzed.runs - analyzedBefore;

    // ---- stop; the backends exit and publish their last counts; then the figures
    await stopAll(services);
    await untilNoSessions(admin, dbName);
    const xacts = (await committedTransactions(admin, dbName)) - xactBefore - ownXacts;
    const f = await runFigures(own);
    const wf = await workflowFigures(own);
    const statements = delta(before.slice(0, 1), after.slice(0, 1), "rtb_db_statements_total");
    const published = delta(before, after, "rtb_broker_messages_published_total");
    const waits = delta(before, after, "rtb_broker_confirm_waits_total");
    const leaderAt = services.findIndex((p) => p.name === "leader");
    const jobUnits = delta([before[leaderAt]!], [after[leaderAt]!], "rtb_leader_units_per_job_sum");
    const jobs = delta([before[leaderAt]!], [after[leaderAt]!], "rtb_leader_units_per_job_count");
    const total = wf.finished.success + wf.finished.error + wf.finished.cancelled + wf.finished.running;
    if (total !== n) throw new Error(`${total} workflows in the database, ${n} enqueued`);
    const result: WorkflowRun = {
      workflows: n,
      steps,
      database: dbName,
      brokerPrefix: prefix,
      enqueue: { seconds: enqueueS, workflowsPerSec: n / enqueueS, inFlight: ENQUEUE_IN_FLIGHT },
      analyze: { everyS, ...analyzed },
      finished: wf.finished,
      terminal: f.terminal,
      success: f.success,
      error: f.error,
      redispatched: f.redispatched,
      seconds: wf.seconds,
      workflowsPerSec: (wf.finished.success + wf.finished.error + wf.finished.cancelled) / wf.seconds,
      stepSeconds: f.seconds,
      stepsPerSec: f.terminal / f.seconds,
      latencyMs: {
        enqueueToFinished: wf.enqueueToFinished,
        goToFinished: wf.goToFinished,
        startToFinished: wf.startToFinished,
        stepDispatchToTerminal: { p50: f.p50Ms, p99: f.p99Ms },
        handoff: wf.handoff,
        unblockedToDispatched: wf.unblockedToDispatched,
      },
      perStep: {
        dbStatements: statements === null ? null : statements / steps,
        pgTransactions: xacts / steps,
        brokerMessages: published === null ? null : published / steps,
        confirmWaits: waits === null ? null : waits / steps,
      },
      unitsPerJob: jobUnits === null || !jobs ? null : jobUnits / jobs,
      peakMemoryMiB,
    };
    say(`done: ${Math.round(result.workflowsPerSec).toLocaleString("en")} workflows/s, ${Math.round(result.stepsPerSec).toLocaleString("en")} steps/s over ${result.seconds.toFixed(1)} s`);
    return result;
  } finally {
    await analyzing?.stop();
    await run.end();
  }
}

const pct3 = (expr: string) =>
  `percentile_cont(ARRAY[0.5, 0.95, 0.99]::float8[]) WITHIN GROUP (ORDER BY ${expr})`;
const toPct3 = (a: number[] | null): Percentiles3 => ({ p50: a?.[0] ?? NaN, p95: a?.[1] ?? NaN, p99: a?.[2] ?? NaN });

/** The workflow figures of a run, from its database, after every step is terminal. */
async function workflowFigures(conn: pg.ClientConfig) {
  const client = new pg.Client(conn);
  await client.connect();
  try {
    const { rows: c } = await client.query<WorkflowRun["finished"] & { seconds: number | null; e2f: number[] | null; g2f: number[] | null }>(`
      SELECT count(*) FILTER (WHERE status = 'success')::int AS success,
             count(*) FILTER (WHERE status = 'error')::int AS error,
             count(*) FILTER (WHERE status = 'cancelled')::int AS cancelled,
             count(*) FILTER (WHERE status = 'running')::int AS running,
             extract(epoch FROM max(finished_at) - (SELECT dispatching_changed_at FROM control))::float8 AS seconds,
             ${pct3("extract(epoch FROM finished_at - created_at)::float8 * 1000")} AS e2f,
             ${pct3("extract(epoch FROM finished_at - greatest(created_at, (SELECT dispatching_changed_at FROM control)))::float8 * 1000")} AS g2f
      FROM workflows`);
    // The first dispatch of each step, and its first success (noop: its only end).
    const firsts = `
      d AS (SELECT unit_id, min(at) AS at FROM unit_events WHERE status = 'dispatched' GROUP BY unit_id),
      s AS (SELECT unit_id, min(at) AS at FROM unit_events WHERE status = 'success' GROUP BY unit_id)`;
    const { rows: start } = await client.query<{ v: number[] | null }>(`
      WITH ${firsts}
      SELECT ${pct3("ms")} AS v FROM (
        SELECT extract(epoch FROM w.finished_at - min(d.at))::float8 * 1000 AS ms
        FROM workflows w JOIN units u ON u.workflow_id = w.id JOIN d ON d.unit_id = u.id
        WHERE w.finished_at IS NOT NULL GROUP BY w.id, w.finished_at) x`);
    const { rows: handoff } = await client.query<{ v: number[] | null }>(`
      WITH ${firsts}
      SELECT ${pct3("ms")} AS v FROM (
        SELECT extract(epoch FROM d.at - max(s.at))::float8 * 1000 AS ms
        FROM unit_deps e JOIN s ON s.unit_id = e.depends_on JOIN d ON d.unit_id = e.unit_id
        GROUP BY e.unit_id, d.at) x`);
    const { rows: unblocked } = await client.query<{ v: number[] | null }>(`
      WITH ${firsts},
      p AS (SELECT unit_id, min(at) AS at FROM unit_events WHERE status = 'pending' AND source = 'workflow' GROUP BY unit_id)
      SELECT ${pct3("extract(epoch FROM d.at - p.at)::float8 * 1000")} AS v FROM p JOIN d USING (unit_id)`);
    const r = c[0]!;
    return {
      finished: { success: r.success, error: r.error, cancelled: r.cancelled, running: r.running },
      seconds: r.seconds ?? NaN,
      enqueueToFinished: toPct3(r.e2f),
      goToFinished: toPct3(r.g2f),
      startToFinished: toPct3(start[0]?.v ?? null),
      handoff: toPct3(handoff[0]?.v ?? null),
      unblockedToDispatched: toPct3(unblocked[0]?.v ?? null),
    };
  } finally {
    await client.end();
  }
}

/**
 * One workflow on fresh services: its root (`simulate`, 0 ms) spawns `children` `noop` steps
 * and a `noop` join; timed from POST /workflows, from the root's dispatch and from the first
 * child's dispatch to the workflow finished. No ANALYZE of the bench's here (--analyze-every is
 * for the order runs): the spawn is one transaction, and an ANALYZE while it runs sees the
 * tables without its children, nearly empty, and the planner then reads the spawn's own
 * statements as over empty tables (measured: a fan-out of 9,999 took 55-65 s from POST to
 * finished instead of 14-16 s). Autovacuum never counts a transaction's rows before it commits.
 */
export async function runFanOut(s: BenchSettings, w: WorkflowSettings, say: (msg: string) => void): Promise<FanOutRun> {
  const children = w.fanOut;
  const run = startBenchRun(s, say, { kinds: [s.kind, "simulate"] });
  const { services } = run;
  const { servers, dbName, prefix } = run.place;
  try {
    say(`fan-out: one workflow whose root spawns ${children.toLocaleString("en")} children and a join (database ${dbName})`);
    const [apiReady] = await Promise.all(services.map((p) => readyWithin(p, 120_000)));
    const base = String(apiReady!.url).replace(/\/$/, "");
    const go = await fetch(`${base}/go`);
    if (!go.ok) throw new Error(`GET /go answered ${go.status}: ${await go.text()}`);
    await go.arrayBuffer();
    const spawn = {
      steps: Array.from({ length: children }, (_, i) => ({ step: `c-${i}`, kind: s.kind })),
      join: { step: "join", kind: s.kind },
    };
    const { workflow } = (await post(base, "/workflows", { name: "fan-out", steps: [{ step: "root", kind: "simulate", payload: { spawn } }] })) as { workflow: { id: number } };
    const db = new pg.Client(connectionOptions({ ...servers, RTB_DB_POOL_SIZE: 1 }, dbName));
    await db.connect();
    try {
      let progressAt = Date.now();
      let last = -1;
      let saidAt = Date.now();
      for (;;) {
        if (running.interrupted) throw new Error("interrupted");
        const gone = services.find((p) => !p.running());
        if (gone) throw new Error(`${gone.name} exited during the fan-out; its last lines:\n${gone.tail()}`);
        const { rows } = await db.query<{ status: string; done: number }>(
          `SELECT w.status, (SELECT count(*)::int FROM units u WHERE u.workflow_id = w.id AND u.status IN ('success', 'error', 'cancelled')) AS done FROM workflows w WHERE w.id = $1`,
          [workflow.id],
        );
        const { status, done } = rows[0]!;
        if (status !== "running") break;
        if (done > last) progressAt = Date.now();
        last = done;
        if (Date.now() - progressAt > s.stallTimeoutS * 1000) throw new Error(`no step of the fan-out finished for ${s.stallTimeoutS} s (--stall-timeout): ${done} terminal`);
        if (Date.now() - saidAt >= 5_000) {
          saidAt = Date.now();
          say(`fan-out: ${done.toLocaleString("en")} / ${(children + 2).toLocaleString("en")} steps terminal`);
        }
        await new Promise((r) => setTimeout(r, 200));
      }
      // First dispatches: the root's, and the first of its children's (and join's).
      const { rows } = await db.query<{ status: string; steps: number; success: number; total: number; spawn: number; after: number }>(
        `WITH d AS (SELECT u.step = 'root' AS root, min(e.at) AS at FROM units u JOIN unit_events e ON e.unit_id = u.id AND e.status = 'dispatched'
                    WHERE u.workflow_id = $1 GROUP BY 1)
         SELECT w.status,
                (SELECT count(*)::int FROM units u WHERE u.workflow_id = w.id) AS steps,
                (SELECT count(*)::int FROM units u WHERE u.workflow_id = w.id AND u.status = 'success') AS success,
                extract(epoch FROM w.finished_at - w.created_at)::float8 AS total,
                extract(epoch FROM (SELECT at FROM d WHERE NOT root) - (SELECT at FROM d WHERE root))::float8 AS spawn,
                extract(epoch FROM w.finished_at - (SELECT at FROM d WHERE NOT root))::float8 AS after
         FROM workflows w WHERE w.id = $1`,
        [workflow.id],
      );
      const r = rows[0]!;
      const result: FanOutRun = {
        database: dbName,
        brokerPrefix: prefix,
        children,
        steps: r.steps,
        status: r.status,
        success: r.success,
        totalSeconds: r.total,
        spawnSeconds: r.spawn,
        seconds: r.after,
        stepsPerSec: (children + 1) / r.after,
      };
      say(`fan-out ${result.status}: ${Math.round(result.stepsPerSec).toLocaleString("en")} steps/s, ${result.totalSeconds.toFixed(1)} s from POST to finished`);
      return result;
    } finally {
      await db.end();
    }
  } finally {
    await run.end();
  }
}

const WORKFLOW_METHOD =
  `order workflows (${ORDER_SHAPE}, every step kind noop) enqueued through POST /workflows, one a request, ` +
  `${ENQUEUE_IN_FLIGHT} in flight, before GET /go; timed from GET /go to the last workflow's finished_at`;

export function printWorkflows(
  r: { settings: BenchSettings; commit: string | null; dirty: boolean; workflows: WorkflowSettings; results: WorkflowResults },
  json: boolean,
): void {
  const { settings: s, results } = r;
  if (json) {
    const { sizes: _sizes, json: _json, raw: _raw, ...settings } = s;
    const out = {
      date: new Date().toISOString(),
      commit: r.commit,
      dirty: r.dirty,
      settings: { ...settings, fanOut: r.workflows.fanOut },
      method: WORKFLOW_METHOD,
      workflows: results.runs,
      fanOut: results.fanOut,
    };
    console.log(JSON.stringify(out, null, 2));
    return;
  }
  const int = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString("en") : "n/a");
  const fix = (n: number | null, digits = 1) => (n === null || !Number.isFinite(n) ? "n/a" : n.toFixed(digits));
  const mib = (n: number | null | undefined) => (n === null || n === undefined ? "n/a" : `${Math.round(n)} MiB`);
  const p3 = (p: Percentiles3) => `p50 ${int(p.p50)} ms, p95 ${int(p.p95)} ms, p99 ${int(p.p99)} ms`;
  console.log("");
  console.log(
    `rtb workflows: ${s.agents} agent(s) x RTB_AGENT_CONCURRENCY ${s.concurrency}, RTB_BROADCAST_MAX_QUEUE ${s.maxQueue}, ` +
      `${s.groups} group(s), kind ${s.kind}; leader prefetch ${s.leaderPrefetch}, inbox prefetch ${s.inboxPrefetch}`,
  );
  console.log(`services from ${s.root} at ${r.commit ?? "?"}${r.dirty ? " (with uncommitted changes)" : ""}`);
  for (const run of results.runs) {
    const w = run.finished;
    console.log("");
    console.log(`${int(run.workflows)} order workflows (${ORDER_SHAPE}), ${int(run.steps)} steps`);
    console.log(`  workflows  ${int(run.workflowsPerSec)} workflows/s: ${int(w.success + w.error + w.cancelled)} finished (${int(w.success)} success, ${int(w.error)} error, ${int(w.cancelled)} cancelled) ${fix(run.seconds)} s after GET /go`);
    console.log(`  steps      ${int(run.stepsPerSec)} steps/s: ${int(run.terminal)} terminal (${int(run.success)} success, ${int(run.error)} error) ${fix(run.stepSeconds)} s after GET /go`);
    console.log(`  workflow   first dispatch -> finished: ${p3(run.latencyMs.startToFinished)} (its own four levels, under full load)`);
    console.log(`             enqueue -> finished: ${p3(run.latencyMs.enqueueToFinished)} (the enqueue and the bench's ${STATS_QUIET_MS / 1000} s before GET /go included)`);
    console.log(`             GET /go -> finished: ${p3(run.latencyMs.goToFinished)} (the backlog worked off)`);
    console.log(`  step       dispatch -> terminal: p50 ${int(run.latencyMs.stepDispatchToTerminal.p50)} ms, p99 ${int(run.latencyMs.stepDispatchToTerminal.p99)} ms`);
    console.log(`  handoff    last dependency's success -> dependent dispatched: ${p3(run.latencyMs.handoff)}`);
    console.log(`             of that, unblocked -> dispatched: ${p3(run.latencyMs.unblockedToDispatched)}`);
    console.log(
      `  per step   ${fix(run.perStep.dbStatements, 2)} database statements (api), ${fix(run.perStep.pgTransactions, 3)} PostgreSQL transactions, ` +
        `${fix(run.perStep.brokerMessages, 2)} broker messages published, ${fix(run.perStep.confirmWaits, 2)} confirm waits; ${fix(run.unitsPerJob, 1)} units per job message (mean)`,
    );
    console.log(`  memory     peak (VmHWM): ${Object.entries(run.peakMemoryMiB).map(([name, m]) => `${name} ${mib(m)}`).join(", ")}`);
    if (run.redispatched > 0) console.log(`  note       ${int(run.redispatched)} step(s) dispatched more than once (retried or re-published)`);
    console.log(`  enqueue    ${int(run.enqueue.workflowsPerSec)} workflows/s through POST /workflows, one a request, ${run.enqueue.inFlight} in flight (before GET /go, not counted above)`);
    if (run.analyze.everyS > 0) {
      console.log(
        `  analyze    ${ANALYZED.join(", ")} every ${run.analyze.everyS} s from the enqueue on and once 1 % of the steps had finished (--analyze-every): ` +
          `${int(run.analyze.runs)} times, ${fix(run.analyze.seconds)} s in all, not counted above`,
      );
    }
  }
  if (results.runs.length > 1) {
    const rows = [
      ["workflows", "workflows/s", "steps/s", "start->finished p50/p95/p99 ms", "handoff p50/p99 ms", "stmts/step", "xacts/step", "msgs/step", "api", "leader"],
      ...results.runs.map((run) => [
        int(run.workflows),
        int(run.workflowsPerSec),
        int(run.stepsPerSec),
        `${int(run.latencyMs.startToFinished.p50)} / ${int(run.latencyMs.startToFinished.p95)} / ${int(run.latencyMs.startToFinished.p99)}`,
        `${int(run.latencyMs.handoff.p50)} / ${int(run.latencyMs.handoff.p99)}`,
        fix(run.perStep.dbStatements, 2),
        fix(run.perStep.pgTransactions, 3),
        fix(run.perStep.brokerMessages, 2),
        mib(run.peakMemoryMiB.api),
        mib(run.peakMemoryMiB.leader),
      ]),
    ];
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
    console.log("");
    for (const row of rows) console.log(row.map((cell, i) => cell.padStart(widths[i]!)).join("  "));
  }
  const f = results.fanOut;
  if (f) {
    console.log("");
    console.log(`fan-out: one workflow, its root (simulate, 0 ms) spawns ${int(f.children)} noop children and a noop join, on fresh services`);
    console.log(`  fan-out    ${int(f.stepsPerSec)} steps/s: children and join ${fix(f.seconds)} s from the first child dispatched to the workflow ${f.status} (${int(f.success)} of ${int(f.steps)} steps success)`);
    console.log(`  spawn      root dispatched -> first child dispatched: ${fix(f.spawnSeconds, 2)} s (the root's report applied with its children and their edges, one transaction)`);
    console.log(`             POST /workflows -> finished: ${fix(f.totalSeconds)} s`);
  }
  console.log("");
  console.log("statements and transactions include the api's background work during the run (heartbeats, reconciler) and GET / polled twice a second.");
}
