/**
 * `npm run chaos`: the whole system (an api, leaders, agents, each its own process) over
 * thousands of units while random services are killed (SIGKILL) or stopped (SIGTERM) and
 * restarted, again and again, with workflows in the mix (order-like DAGs: failures, an
 * ignore edge, fan-outs, cancels and retries mid-run). Then it lets the run drain, runs the
 * invariant checker (services/api/src/check.ts, the workflow rules included), checks that
 * every workflow ended and every step was handed exactly its dependencies' results, and prints
 * a summary. Exit 0 when nothing was lost and every invariant held, 1 otherwise, 2 on a bad flag.
 *
 * It works in a database and under broker names of its own (rtb_chaos_<id>, chaos.<id>.),
 * dropped at the end unless --keep, so it never touches the data of a running rtb.
 * The PostgreSQL and RabbitMQ servers are the ones RTB_DB_* and RTB_BROKER_* name.
 *
 *   npm run chaos                                   # 3000 units, 60 s of faults
 *   npm run chaos -- --units 20000 --duration 600   # longer
 *   npm run chaos -- --broker-restarts              # also restart RabbitMQ (disrupts its other users)
 *   npm run chaos -- --retention 0                  # without pruning (default: RTB_RETENTION=5s)
 */
import { exec, spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs, promisify } from "node:util";
import { checkSystem, sampleOutstanding } from "@rtb/api";
import { checkWorkflows, createDb, unitsKeptAndPruned, type DbHandle } from "@rtb/db";
import { connectBrokerFromConfig, createLogger, duration, type Broker, type Duration } from "@rtb/runtime";
import { scratchPlace } from "./scratch-place.ts";
// Plain functions (no test runner): the order-like workflows and their end-of-run checks, shared with the fault tests.
import { checkInputs, ORDER_SHAPES, orderWorkflow, workflowStatuses, type InputsMismatch, type OrderShape } from "../test/support/workflow-runs.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
const sh = promisify(exec);

const flags = {
  units: { type: "string", default: "3000" },
  agents: { type: "string", default: "4" },
  leaders: { type: "string", default: "2" },
  duration: { type: "string", default: "60" },
  "max-queue": { type: "string", default: "50" },
  "every-min": { type: "string", default: "1" },
  "every-max": { type: "string", default: "4" },
  "drain-timeout": { type: "string", default: "180" },
  "broker-restarts": { type: "boolean", default: false },
  retention: { type: "string", default: "5s" },
  keep: { type: "boolean", default: false },
  help: { type: "boolean", default: false },
} as const;

let opts: {
  units: number;
  agents: number;
  leaders: number;
  duration: number;
  maxQueue: number;
  everyMin: number;
  everyMax: number;
  drainTimeout: number;
  brokerRestarts: boolean;
  retention: Duration;
  keep: boolean;
};
try {
  const { values: v } = parseArgs({ options: flags });
  if (v.help) {
    console.log("usage: npm run chaos -- [--units N] [--agents N] [--leaders N] [--duration S] [--max-queue N] [--every-min S] [--every-max S] [--drain-timeout S] [--broker-restarts] [--retention D] [--keep]");
    process.exit(0);
  }
  const num = (name: keyof typeof flags, min: number) => {
    const n = Number(v[name]);
    if (!Number.isFinite(n) || n < min) throw new Error(`--${name}="${String(v[name])}": expected a number >= ${min}`);
    return n;
  };
  opts = {
    units: num("units", 1),
    agents: num("agents", 1),
    leaders: num("leaders", 1),
    duration: num("duration", 0),
    maxQueue: num("max-queue", 1),
    everyMin: num("every-min", 0.1),
    everyMax: num("every-max", 0.1),
    drainTimeout: num("drain-timeout", 1),
    brokerRestarts: v["broker-restarts"],
    retention: (() => {
      const parsed = duration("0").safeParse(v.retention);
      if (!parsed.success) throw new Error(`--retention="${v.retention}": expected a duration such as 5s or 1m, or 0 (no pruning)`);
      return parsed.data;
    })(),
    keep: v.keep,
  };
  if (opts.everyMax < opts.everyMin) throw new Error("--every-max must be >= --every-min");
} catch (err) {
  console.error(`rtb chaos: ${(err as Error).message}`);
  process.exit(2);
}

const place = scratchPlace("chaos");
const { servers, runId, dbName, prefix } = place;
const logDir = join(tmpdir(), `rtb-chaos-${runId}`);
mkdirSync(logDir, { recursive: true });
const say = (msg: string) => console.log(`[chaos ${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s] ${msg}`);
const started = Date.now();

const DISPATCH_TIMEOUT_MS = 3_000;
const PROCESSING_TIMEOUT_MS = 15_000;
const port = await freePort();
const env: Record<string, string> = {
  ...(process.env as Record<string, string>),
  RTB_DB_NAME: dbName,
  RTB_BROKER_PREFIX: prefix,
  RTB_API_HOST: `127.0.0.1:${port}`,
  RTB_SEED_UNITS: String(opts.units),
  RTB_BROADCAST_MAX_QUEUE: String(opts.maxQueue),
  RTB_AGENT_WORK_MIN_MS: "5",
  RTB_AGENT_WORK_MAX_MS: "60",
  RTB_AGENT_ERROR_RATE: "0.1",
  RTB_AGENT_TIMEOUT_MS: "5000",
  RTB_RETRY_BACKOFF_MS: "50",
  RTB_RETRY_BACKOFF_MAX_MS: "1000",
  RTB_DISPATCH_TIMEOUT_MS: String(DISPATCH_TIMEOUT_MS),
  RTB_PROCESSING_TIMEOUT_MS: String(PROCESSING_TIMEOUT_MS),
  RTB_RECONCILE_CRON: "*/1 * * * * *",
  // Finished units are pruned while faults go on: the checker must hold through it.
  RTB_RETENTION: opts.retention.text,
  RTB_SHUTDOWN_TIMEOUT_MS: "3000",
  RTB_HEARTBEAT_MS: "1000",
  RTB_CONNECT_TIMEOUT_MS: "60000",
  RTB_LOG_LEVEL: "info",
  RTB_LOG_FORMAT: "json",
};

// ---- the services, each its own process -------------------------------------------------

interface Service {
  name: string;
  entry: string;
  env: Record<string, string>;
  child?: ChildProcess;
  ready: boolean;
  starts: number;
}
const services: Service[] = [
  { name: "api", entry: "services/api/src/main.ts", env: { RTB_API_ID: "api" }, ready: false, starts: 0 },
  ...Array.from({ length: opts.leaders }, (_, i) => ({ name: `leader-${i + 1}`, entry: "services/leader/src/main.ts", env: { RTB_LEADER_ID: `leader-${i + 1}` }, ready: false, starts: 0 })),
  ...Array.from({ length: opts.agents }, (_, i) => ({ name: `agent-${i + 1}`, entry: "services/agent/src/main.ts", env: { RTB_AGENT_ID: `agent-${i + 1}` }, ready: false, starts: 0 })),
];
const READY = /"msg":"(api listening|leader ready|agent ready)/;
const faults: Record<string, number> = {};
let recoveries = 0;
let unexpectedExits = 0;
let stopping = false;

function launch(s: Service) {
  s.ready = false;
  s.starts++;
  const log = createWriteStream(join(logDir, `${s.name}.log`), { flags: "a" });
  const child = spawn(process.execPath, ["--import", "tsx", s.entry], { cwd: root, env: { ...env, ...s.env }, stdio: ["ignore", "pipe", "pipe"] });
  s.child = child;
  let buffered = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    log.write(chunk);
    if (s.ready) return;
    buffered += chunk.toString();
    if (READY.test(buffered)) {
      s.ready = true;
      buffered = "";
      if (s.starts > 1) recoveries++;
    }
  });
  child.stderr!.pipe(log);
  child.on("exit", (code, signal) => {
    if (s.child === child) s.child = undefined;
    s.ready = false;
    log.end();
    // A service that stops by itself (not killed by us) is a finding, unless we are stopping.
    if (!stopping && !killedByUs.has(child)) {
      unexpectedExits++;
      say(`${s.name} exited on its own (${signal ?? `code ${code}`}); see ${join(logDir, `${s.name}.log`)}; restarting`);
      setTimeout(() => launch(s), 500);
    }
  });
}
const killedByUs = new WeakSet<ChildProcess>();
const countFault = (what: string) => (faults[what] = (faults[what] ?? 0) + 1);

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer().listen(0, "127.0.0.1", () => {
      const { port: p } = srv.address() as { port: number };
      srv.close(() => resolve(p));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const random = (min: number, max: number) => min + Math.random() * (max - min);
const api = (path: string): Promise<any> => fetch(`http://127.0.0.1:${port}${path}`).then((r) => r.json());

async function until(what: string, fn: () => Promise<boolean> | boolean, timeoutMs: number, everyMs = 200) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await Promise.resolve(fn()).catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(everyMs);
  }
}

async function kill(s: Service, signal: "SIGKILL" | "SIGTERM") {
  const child = s.child;
  if (!child) return;
  // A process still loading its modules has no signal handlers yet: SIGTERM ends it like
  // SIGKILL would. Only a ready service owes us a clean exit 0.
  const wasReady = s.ready;
  killedByUs.add(child);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  child.kill(signal);
  const code = await exited;
  countFault(`${signal} ${s.name.replace(/-\d+$/, "")}`);
  if (signal === "SIGTERM" && wasReady && code !== 0) {
    unexpectedExits++;
    say(`${s.name} exited with code ${code} after SIGTERM (expected 0)`);
  }
}

async function restartBroker() {
  countFault("restart rabbitmq");
  const down = Math.round(random(1, 5));
  say(`restarting RabbitMQ (down ${down} s)`);
  await sh(process.env.RTB_CHAOS_BROKER_STOP ?? "rabbitmqctl stop_app");
  await sleep(down * 1000);
  await sh(process.env.RTB_CHAOS_BROKER_START ?? "rabbitmqctl start_app && rabbitmqctl await_startup");
}

/**
 * What operators and producers do while the faults go on, so that the invariants are checked
 * with it in the mix:
 * - units enqueued with a delay (due during the run, one per batch in the past), each batch in
 *   a group of its own;
 * - a schedule firing every second (`chaos-tick`), which must enqueue exactly one unit per
 *   occurrence whatever the api's restarts: checked at the end (`checkSchedule`);
 * - cancels: now and then a unit in flight, and a whole group of delayed units by filter;
 * - workflows (`workflowTick`): two per tick, of the order shapes in turn; now and then one
 *   cancelled mid-run, and a failed step retried.
 * Requests the api misses while it is down are dropped (their units are not expected); a
 * refusal (4xx) of a good request is a finding, except the 409 of a cancel or retry that lost
 * its race (and the 404 of one whose workflow retention removed meanwhile). Returns what was
 * done, by kind of action.
 */
async function mix(until: number): Promise<Record<string, number>> {
  const done: Record<string, number> = {
    "delayed units": 0,
    "units cancelled one by one": 0,
    "units cancelled by group": 0,
    workflows: 0,
    "workflows cancelled mid-run": 0,
    "steps retried": 0,
    "requests refused while the api was down": 0,
  };
  let tick = 0;
  while (Date.now() < until) {
    await sleep(random(200, 800));
    tick++;
    try {
      if (!scheduleMade) {
        await post("/schedules", { name: SCHEDULE, cron: "* * * * * *", unit: { kind: "simulate", group: "scheduled" }, missed: "skip" }, [409]);
        scheduleMade = true;
      }
      const group = `delayed-${tick}`;
      const batch = Array.from({ length: 10 }, (_, i) =>
        i === 0 ? { kind: "simulate", group, runAt: new Date(Date.now() - 60_000).toISOString() } : { kind: "simulate", group, delayMs: Math.round(random(0, 5_000)) },
      );
      await post("/units", batch);
      done["delayed units"]! += batch.length;
      if (tick % 4 === 0) {
        const page = await api("/units?status=dispatched,queued,processing&limit=20");
        const victim = page.units?.[Math.floor(Math.random() * page.units.length)];
        if (victim && (await post(`/units/${victim.id}/cancel`, {}, [409])) !== null) done["units cancelled one by one"]!++;
      }
      if (tick % 7 === 0) {
        // The delayed batch of a few ticks ago: some of it done, some in flight, some waiting.
        const bulk = await post("/units/cancel", { group: `delayed-${tick - 3}` });
        done["units cancelled by group"]! += bulk.cancelled;
      }
    } catch (err) {
      // The api is down (killed by the faults), or refused a good request: the latter is a finding.
      if (err instanceof Error && err.message.startsWith("POST ")) throw err;
      done["requests refused while the api was down"]!++;
    }
    try {
      await workflowTick(done);
    } catch (err) {
      if (err instanceof Error && err.message.startsWith("POST ")) throw err;
      done["requests refused while the api was down"]!++;
    }
  }
  return done;
}

const SCHEDULE = "chaos-tick";
let scheduleMade = false;

/** A workflow the mix made, as last seen through GET /workflows/:id. */
interface TrackedWorkflow {
  shape: OrderShape;
  /** The most steps seen: its 5, and a fan-out's once spawned (retention only removes steps of finished workflows). */
  steps: number;
  status: string;
  /** The steps as last seen (for choosing what to retry). */
  last: WorkflowStep[];
  /** Removed by retention (GET answered 404): finished, its count final. */
  gone: boolean;
  createdTick: number;
}
interface WorkflowStep {
  id: number;
  step: string;
  status: string;
  closedBy: number | null;
  dependsOn: { unitId: number; onFailure: string; satisfied: boolean }[];
}
const workflows = new Map<number, TrackedWorkflow>();
const retriedSteps = new Map<number, number>();

/** GET /workflows/:id into the tracking (a 404: retention removed it, finished). */
async function observe(id: number, w: TrackedWorkflow) {
  const res = await fetch(`http://127.0.0.1:${port}/workflows/${id}`);
  if (res.status === 404) {
    w.gone = true;
    w.status = "gone";
    return;
  }
  if (!res.ok) throw new TypeError(`answered ${res.status}`);
  const wf = (await res.json()) as { status: string; steps: WorkflowStep[] };
  w.status = wf.status;
  w.steps = Math.max(w.steps, wf.steps.length);
  w.last = wf.steps;
}

/**
 * "Results passed exactly" (checkInputs), checked every second while the run goes on and once
 * at the end, and added up: retention removes finished workflows within seconds, so a check at
 * the end alone would see few of them. A succeeded step's inputs never change.
 */
const inputsSeen = { checked: new Set<number>(), withPruned: new Set<number>(), mismatches: new Map<number, InputsMismatch>() };
async function checkInputsNow(db: DbHandle["db"]) {
  const found = await checkInputs(db);
  for (const id of found.ids) inputsSeen.checked.add(id);
  for (const id of found.prunedIds) inputsSeen.withPruned.add(id);
  for (const m of found.mismatches) inputsSeen.mismatches.set(m.unitId, m);
}
function watchInputs(db: DbHandle["db"]): { stop(): Promise<void> } {
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      // The database is never down on purpose here; a failed look is made again a second later.
      await checkInputsNow(db).catch(() => {});
      await sleep(1_000);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
    },
  };
}

let workflowTicks = 0;
/**
 * The workflow source of the mix, each tick: two new workflows of the next shapes
 * (ORDER_SHAPES in test/support/workflow-runs.ts: the order diamond of 5 steps, some failing
 * permanently by payload.fail, one with an ignore edge, some fanning out 3 lines and a join);
 * the running ones looked at (their step count, the fan-out's included); every 3rd tick one
 * cancelled mid-run (POST /workflows/:id/cancel); every 2nd a failed or cancelled step retried
 * (POST /units/:id/retry), which re-opens what its failure closed; a step a failed dependency
 * closed, or one cancelled while blocked, goes back to waiting for its dependencies (and is
 * closed again while one is still failed). None an ignore edge names is retried: a dependent
 * that went ahead without it must not see it succeed later (checkInputs).
 */
async function workflowTick(done: Record<string, number>) {
  // Two new ones per tick, the shapes in turn; the tick counts only once they were made (the api may be down).
  for (let i = 0; i < 2; i++) {
    const shape = ORDER_SHAPES[done.workflows! % ORDER_SHAPES.length]!;
    const created = await post("/workflows", orderWorkflow(shape));
    workflows.set(created.workflow.id, { shape, steps: created.workflow.steps.length, status: created.workflow.status, last: created.workflow.steps, gone: false, createdTick: workflowTicks + 1 });
    done.workflows!++;
  }
  const tick = ++workflowTicks;
  for (const [id, w] of workflows) if (w.status === "running") await observe(id, w);
  if (tick % 3 === 0) {
    // A recent one still under way: some of its steps done, some in flight, some blocked.
    const running = [...workflows.entries()].filter(([, w]) => w.status === "running" && w.createdTick < tick);
    const victim = running.at(-1);
    if (victim) {
      const res = await post(`/workflows/${victim[0]}/cancel`, {}, [404]);
      if (res !== null && res.cancelled > 0) done["workflows cancelled mid-run"]!++;
      await observe(victim[0], victim[1]);
    }
  }
  if (tick % 2 === 0) {
    const candidates = [...workflows.entries()].flatMap(([id, w]) => {
      if (w.gone) return [];
      const ignored = new Set(w.last.flatMap((s) => s.dependsOn.filter((d) => d.onFailure === "ignore").map((d) => d.unitId)));
      return w.last
        .filter((s) => s.status === "error" || s.status === "cancelled")
        .filter((s) => !ignored.has(s.id) && (retriedSteps.get(s.id) ?? 0) < 2)
        .map((s) => ({ id, w, step: s }));
    });
    const pick = candidates[Math.floor(Math.random() * candidates.length)];
    if (pick) {
      retriedSteps.set(pick.step.id, (retriedSteps.get(pick.step.id) ?? 0) + 1);
      if ((await post(`/units/${pick.step.id}/retry`, {}, [404, 409])) !== null) done["steps retried"]!++;
      await observe(pick.id, pick.w);
    }
  }
}

/**
 * POST a JSON body to the api; a 4xx is a finding (thrown as "POST ...") unless `allowed`
 * names it (then null); a 5xx or no answer is an api on its way down or up (a TypeError).
 */
async function post(path: string, body: unknown, allowed: number[] = []): Promise<any> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  if (allowed.includes(res.status)) return null;
  if (res.status >= 400 && res.status < 500) throw new Error(`POST ${path} answered ${res.status}: ${(await res.text()).slice(0, 200)}`);
  if (res.status >= 300) throw new TypeError(`answered ${res.status}`);
  return res.json();
}

/**
 * The every-second schedule, after the faults: once the api has caught up (its last occurrence
 * fired is at most 2 s old), paused; then every occurrence from its creation to the last one
 * fired must have made exactly one unit: `fired` is that count, none skipped (the api was never
 * down for RTB_SCHEDULE_GRACE_MS). Returns the units it made and a finding, if any.
 */
async function checkSchedule(): Promise<{ fired: number; finding: string | null }> {
  if (!scheduleMade) return { fired: 0, finding: null };
  await until("the schedule to catch up", async () => {
    const sc = await api(`/schedules/${SCHEDULE}`);
    return sc.lastFired !== null && Date.now() - Date.parse(sc.lastFired.occurrence) < 2_000;
  }, 30_000, 250);
  await post(`/schedules/${SCHEDULE}/pause`, {});
  const sc = await api(`/schedules/${SCHEDULE}`);
  const expected = Math.floor(Date.parse(sc.lastFired.occurrence) / 1000) - Math.floor(Date.parse(sc.createdAt) / 1000);
  const finding =
    sc.fired !== expected || sc.skipped !== 0
      ? `schedule ${SCHEDULE}: ${sc.fired} units for ${expected} occurrences from ${sc.createdAt} to ${sc.lastFired.occurrence}, ${sc.skipped} skipped`
      : null;
  return { fired: sc.fired, finding };
}

// ---- the run -------------------------------------------------------------------------------

const logger = createLogger({ service: "chaos", level: "silent", format: "json" });
let database: DbHandle | undefined;
let broker: Broker | undefined;
let exitCode = 1;
let mixed: Record<string, number> = {};
process.on("SIGINT", () => {
  say("interrupted: stopping");
  stopping = true;
  for (const s of services) s.child?.kill("SIGKILL");
  void cleanup().then(() => process.exit(130));
});

try {
  say(`${opts.units} units, ${opts.leaders} leader(s), ${opts.agents} agent(s), max queue ${opts.maxQueue}, ${opts.duration} s of faults; database ${dbName}, logs in ${logDir}`);
  for (const s of services) launch(s);
  await until("every service to be ready", () => services.every((s) => s.ready), 90_000);
  database = createDb({ ...servers, RTB_DB_NAME: dbName, RTB_DB_POOL_SIZE: 2 }, logger);
  const sampler = sampleOutstanding(database.db, 50);
  const inputsWatch = watchInputs(database.db);
  await api("/go");
  say("dispatching (GET /go); injecting faults");

  const faultsUntil = Date.now() + opts.duration * 1000;
  const mixing = mix(faultsUntil);
  const restarts: Promise<void>[] = [];
  while (Date.now() < faultsUntil) {
    await sleep(random(opts.everyMin, opts.everyMax) * 1000);
    if (Date.now() >= faultsUntil) break;
    if (opts.brokerRestarts && Math.random() < 0.1) {
      await restartBroker();
      continue;
    }
    const up = services.filter((s) => s.child);
    if (up.length === 0) continue;
    const victim = up[Math.floor(Math.random() * up.length)]!;
    const signal = Math.random() < 0.7 ? "SIGKILL" : "SIGTERM";
    say(`${signal} ${victim.name}`);
    await kill(victim, signal);
    // Back after a while; meanwhile the others carry on (or, for the api, the broker holds the reports).
    restarts.push(sleep(random(200, 3_000)).then(() => launch(victim)));
  }
  await Promise.all(restarts);
  mixed = await mixing;
  say("faults over; waiting for every service and for the backlog to drain");
  await until("every service to be ready again", () => services.every((s) => s.ready), 90_000);
  const schedule = await checkSchedule();
  mixed["scheduled units"] = schedule.fired;
  say(`the producer's mix: ${Object.entries(mixed).map(([k, n]) => `${k} ${n}`).join(", ")}`);
  await until("every unit to be terminal", async () => (await api("/")).done === true, opts.drainTimeout * 1000, 500);
  await sampler.stop();
  // The workflows' last look: every step of those retention has not removed.
  for (const [id, w] of workflows) if (!w.gone) await observe(id, w);

  broker = await connectBrokerFromConfig({ ...servers, RTB_BROKER_PREFIX: prefix, RTB_CONNECT_TIMEOUT_MS: 10_000 }, logger);
  // Wait for late duplicates (a job re-run after a kill) to be consumed before checking the queues.
  await until("the job queues to drain", async () => (await broker!.inspectQueue(broker!.topology.jobQueue("simulate")))?.messages === 0, 30_000, 500).catch(() => {});
  const report = await checkSystem({
    db: database.db,
    broker,
    maxQueue: opts.maxQueue,
    dispatchTimeoutMs: DISPATCH_TIMEOUT_MS,
    processingTimeoutMs: PROCESSING_TIMEOUT_MS,
    observedPeak: sampler.peak,
    expectDone: true,
  });
  const state = await api("/");
  // Units enqueued (seeded, delayed) neither in the table nor pruned, and units not terminal, are lost.
  const { kept, pruned } = await unitsKeptAndPruned(database.db);
  const workflowSteps = [...workflows.values()].reduce((n, w) => n + w.steps, 0);
  const enqueued = opts.units + (mixed["delayed units"] ?? 0) + (mixed["scheduled units"] ?? 0) + workflowSteps;
  const lost =
    report.counts.blocked + report.counts.pending + report.counts.dispatched + report.counts.queued + report.counts.processing + Math.max(0, enqueued - kept - pruned);
  // The workflows: every one ended (none running once every unit is terminal), the checker's
  // workflow rules held (in report.violations too), and every step was handed exactly the
  // results of its dependencies that succeeded.
  const wf = await workflowStatuses(database.db);
  const workflowViolations = await checkWorkflows(database.db);
  await inputsWatch.stop();
  await checkInputsNow(database.db);
  const inputs = { checked: inputsSeen.checked.size, withPruned: inputsSeen.withPruned.size, mismatches: [...inputsSeen.mismatches.values()] };
  const fannedOut = [...workflows.values()].filter((w) => w.steps > 5).length;
  const workflowsOk = wf.running.length === 0 && workflowViolations.length === 0 && inputs.mismatches.length === 0;
  const injected = Object.values(faults).reduce((a, b) => a + b, 0);

  console.log("");
  console.log("chaos summary");
  console.log(
    `  units        ${kept + pruned} (${opts.units} seeded + ${mixed["delayed units"]} delayed + ${mixed["scheduled units"]} scheduled + ${workflowSteps} workflow steps; success ${report.counts.success}, error ${report.counts.error}, ` +
      `cancelled ${report.counts.cancelled}, pruned ${pruned}: RTB_RETENTION=${opts.retention.text})`,
  );
  console.log(`  faults       ${injected}: ${Object.entries(faults).map(([k, n]) => `${k} ×${n}`).join(", ") || "none"}`);
  console.log(`  recoveries   ${recoveries} service restarts came back ready; ${unexpectedExits} unexpected exit(s)`);
  console.log(`  services     ${state.services.leaders.length} leader(s) and ${state.services.agents.length} agent(s) seen in the last 30 s (killed lifetimes included); active leader ${state.leader?.id ?? "none"} since ${state.leader?.activeSince ?? "?"}`);
  console.log(`  dead letters ${report.queues.dead?.messages ?? "?"} waiting`);
  console.log(`  max queue    peak outstanding ${sampler.peak} of ${opts.maxQueue} over ${sampler.samples} samples`);
  console.log(`  time         ${((Date.now() - started) / 1000).toFixed(1)} s`);
  for (const note of report.notes) console.log(`  note         ${note}`);
  for (const v of report.violations) console.log(`  VIOLATION    ${v.rule}: ${v.message} (${v.count}; e.g. units ${v.units.join(", ")})`);
  console.log(`  schedule     ${schedule.finding ?? `one unit per occurrence of ${SCHEDULE} (${schedule.fired}), none skipped`}`);
  console.log(`  cancels      ${mixed["units cancelled one by one"]} one by one (in flight), ${mixed["units cancelled by group"]} by group`);
  const byStatus = ["success", "error", "cancelled"].map((st) => `${st} ${wf.counts[st] ?? 0}`).join(", ");
  console.log(
    `  workflows    ${workflows.size} (still stored: ${byStatus}; removed by retention ${[...workflows.values()].filter((w) => w.gone).length}; ${fannedOut} fanned out); ` +
      `${mixed["workflows cancelled mid-run"]} cancelled mid-run, ${mixed["steps retried"]} steps retried; running ${wf.running.length}` +
      (wf.running.length > 0 ? ` (e.g. ${wf.running.join(", ")})` : ""),
  );
  console.log(`  wf rules     ${workflowViolations.length === 0 ? "checkWorkflows found nothing" : `checkWorkflows: ${workflowViolations.map((v) => `${v.rule} ×${v.count}`).join(", ")}`}`);
  console.log(
    inputs.mismatches.length === 0
      ? `  results      passed exactly: ${inputs.checked} steps with dependencies were handed the results of exactly those that succeeded (${inputs.withPruned} with a dependency since pruned)`
      : `  results      MISMATCH in ${inputs.mismatches.length} of ${inputs.checked} steps: ${inputs.mismatches.slice(0, 5).map((m) => `unit ${m.unitId} (${m.step}) got [${m.inputs.join(", ")}], succeeded [${m.succeeded.join(", ")}]`).join("; ")}`,
  );
  console.log(`  lost         ${lost}`);
  const ok = report.ok && lost === 0 && unexpectedExits === 0 && schedule.finding === null && workflowsOk;
  console.log(ok ? "  result       ok: nothing lost, every invariant held" : "  result       FAILED");
  exitCode = ok ? 0 : 1;
} catch (err) {
  say(`failed: ${(err as Error).message}`);
  exitCode = 1;
} finally {
  stopping = true;
  await Promise.all(
    services.map(async (s) => {
      const child = s.child;
      if (!child) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await Promise.race([exited, sleep(10_000).then(() => child.kill("SIGKILL"))]);
    }),
  );
  await cleanup();
}
process.exit(exitCode);

async function cleanup() {
  await broker?.close().catch(() => {});
  await database?.close().catch(() => {});
  if (opts.keep) {
    say(`kept database ${dbName} and broker names ${prefix}*`);
    return;
  }
  // Drop what this run created: its database and its queues and exchanges.
  await place.drop();
}
