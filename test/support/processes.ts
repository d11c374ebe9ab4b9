import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { sql } from "kysely";
import { loadApiConfig, sampleOutstanding } from "@rtb/api";
import { statusList, type DbHandle } from "@rtb/db";
import { OUTCOMES, TERMINAL } from "@rtb/protocol";
import { connectBrokerFromConfig, type Broker } from "@rtb/runtime";
import { openTestDb, testLogger, useTestPlace, waitFor, type TestPlace } from "./fixtures.ts";
import { expectRunSettled, type Sampler } from "./runs.ts";
import { serversEnv } from "./servers.ts";

/**
 * The services as an operator runs them: real processes (`node --import tsx <entry>`), real
 * signals, real exit codes. `run` starts one entry point; `startCluster` runs a named set of
 * services (api, leaders, agents) on a test file's database and broker names, so fault tests
 * can kill, signal and restart them and then check that nothing was lost (`expectSettled`).
 */

export const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Proc {
  child: ChildProcess;
  pid: number;
  /** The exit code (null when killed by a signal). */
  exited: Promise<number | null>;
  /** The exit code and the signal. */
  exit: Promise<Exit>;
  running(): boolean;
  /**
   * Its output is complete: it exited and every process that shared its stdout and stderr
   * (a launcher's services, after npm is killed) closed them too.
   */
  closed: Promise<void>;
  /** stdout and stderr, interleaved as they arrived. */
  output(): string;
}

const spawned = new Set<Proc>();

/** Start `entry` (a path under the repository) as `node --import tsx entry`, capturing its output. */
export function run(entry: string, env: Record<string, string>): Proc {
  return runCommand(process.execPath, ["--import", "tsx", entry], env);
}

/**
 * Run a script of the repository (`scripts/bench.ts`) with node and tsx to its end, on the
 * test servers (`serversEnv`), its stdout and stderr kept apart: for commands whose output is
 * the result (a benchmark's figures, its JSON). `env` goes on top (a queue type, say).
 */
export async function runScript(script: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ["--import", "tsx", script, ...args], { cwd: repoRoot, env: { ...process.env, ...serversEnv(), ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
  return { code, stdout, stderr };
}

/**
 * Start `command` in the repository (`npm`, ["start"] is what an operator types), capturing
 * its output; `env` on top of this process's, or alone with `ownEnv` (and elsewhere with `cwd`).
 */
export function runCommand(command: string, args: string[], env: Record<string, string>, opts: { cwd?: string; ownEnv?: boolean } = {}): Proc {
  const child = spawn(command, args, { cwd: opts.cwd ?? repoRoot, env: opts.ownEnv ? env : { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  let exited = false;
  const exit = new Promise<Exit>((resolve) =>
    child.on("exit", (code, signal) => {
      exited = true;
      resolve({ code, signal });
    }),
  );
  const closed = new Promise<void>((resolve) => child.on("close", () => resolve()));
  const p: Proc = { child, pid: child.pid!, exit, exited: exit.then((e) => e.code), running: () => !exited, closed, output: () => output };
  spawned.add(p);
  void exit.then(() => spawned.delete(p));
  return p;
}

/** `pid` and every process below it (children, grandchildren ...), from `ps`. */
export function processTree(pid: number): number[] {
  const rows = execFileSync("ps", ["-e", "-o", "pid=,ppid="]).toString().trim().split("\n").map((l) => l.trim().split(/\s+/).map(Number));
  const tree = [pid];
  for (let i = 0; i < tree.length; i++) for (const [child, parent] of rows) if (parent === tree[i]) tree.push(child!);
  return tree;
}

/** Whether `pid` is still running (a zombie, exited but not yet reaped, is not). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const state = execFileSync("ps", ["-o", "stat=", "-p", String(pid)]).toString().trim();
    return state !== "" && !state.startsWith("Z");
  } catch {
    return false;
  }
}

/** SIGKILL every process `run` started that is still running, and wait for them to exit. */
export async function killAll(): Promise<void> {
  const left = [...spawned];
  for (const p of left) p.child.kill("SIGKILL");
  await Promise.all(left.map((p) => p.exit));
}

/** Wait for `p` to exit, failing after `timeoutMs` (a generous bound, not a measurement). */
export async function exitWithin(p: Proc, timeoutMs: number, what = `process ${p.pid}`): Promise<Exit> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not exit within ${timeoutMs} ms; its output:\n${p.output().slice(-4000)}`)), timeoutMs);
  });
  try {
    return await Promise.race([p.exit, late]);
  } finally {
    clearTimeout(timer);
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer().listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
    srv.once("error", reject);
  });
}

// Test code reads the api's JSON loosely; the api's own tests check its shape.
export const getJson = async (url: string): Promise<any> => {
  // Bounded, so a hung api fails the poll (and the test says so) instead of hanging it.
  const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  if (!res.ok && res.status !== 404 && res.status !== 400) throw new Error(`GET ${url}: ${res.status} ${await res.text()}`);
  return res.json();
};

/** The JSON log lines in `output` (other lines skipped). */
export function logLines(output: string): Record<string, any>[] {
  const lines: Record<string, any>[] = [];
  for (const line of output.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      lines.push(JSON.parse(line));
    } catch {
      // a line cut by the capture; not a log record
    }
  }
  return lines;
}

/** Service names: "api", "leader-<x>" (RTB_LEADER_ID) or "agent-<x>" (RTB_AGENT_ID). */
export type ServiceName = "api" | `api-${string}` | `leader-${string}` | `agent-${string}`;

const entries = { api: "services/api/src/main.ts", leader: "services/leader/src/main.ts", agent: "services/agent/src/main.ts" } as const;
const readyLine = { api: /"msg":"api listening"/g, leader: /"msg":"leader ready/g, agent: /"msg":"agent ready"/g } as const;
const kindOf = (name: string) => (name === "api" || name.startsWith("api-") ? "api" : name.startsWith("leader-") ? "leader" : name.startsWith("agent-") ? "agent" : null);

/** Fast settings for fault runs: small backlog and bound, quick agents, a reconciler every second. */
export const faultDefaults: Record<string, string> = {
  RTB_LOG_LEVEL: "info",
  RTB_SEED_UNITS: "300",
  RTB_BROADCAST_MAX_QUEUE: "20",
  RTB_AGENT_CONCURRENCY: "4",
  RTB_AGENT_WORK_MIN_MS: "20",
  RTB_AGENT_WORK_MAX_MS: "60",
  RTB_AGENT_ERROR_RATE: "0.05",
  RTB_RETRY_BACKOFF_MS: "10",
  RTB_RECONCILE_CRON: "*/1 * * * * *",
  RTB_DISPATCH_TIMEOUT_MS: "3000",
  RTB_SHUTDOWN_TIMEOUT_MS: "3000",
  RTB_TRACKER_REFRESH_MS: "200",
};

/**
 * A fault test's own limit: well above its normal run (about 10 s), so that when something
 * hangs, the harness's bounded waits fail first and print what they saw.
 */
export const faultTestTimeout = 90_000;

export interface Cluster {
  readonly place: TestPlace;
  /** The environment every service gets (place.env, faultDefaults, the test's overrides). */
  readonly env: Record<string, string>;
  /** The api's base URL (a free port, kept across api restarts). */
  readonly url: string;
  /** The base URL of an api replica (`api-<x>`: each its own free port and RTB_API_ID) or of "api". */
  urlOf(name: ServiceName): Promise<string>;
  readonly maxQueue: number;
  /** Units the api seeds at its first start, plus those `enqueue` added. */
  readonly total: number;
  /** POST /units with a batch (201 expected); the units count into `total`. Returns the answer. */
  enqueue(units: object[]): Promise<any>;
  /** POST (a JSON body) to the api; the answer's status and body. */
  post(path: string, body?: unknown): Promise<{ status: number; body: any }>;
  /** Units made otherwise (by a schedule) count into `total`. */
  expectUnits(n: number): void;
  /** A database handle on the test's database, for assertions. */
  readonly db: DbHandle["db"];
  /** Outstanding units sampled since the cluster was created (the product's sampler). */
  readonly sampler: Sampler;
  /** A broker connection on the cluster's names, for checks (opened on first use). */
  broker(): Promise<Broker>;
  /** Start a service and wait for its ready line. `env` overrides are remembered for restarts. */
  start(name: ServiceName, env?: Record<string, string>): Promise<Proc>;
  /** Run `npm start`'s launcher (scripts/start.ts) with this cluster's environment, and wait until every service is ready. */
  startLauncher(env?: Record<string, string>): Promise<Proc>;
  /** The current (last started) process of a service. */
  proc(name: string): Proc;
  /** The output of every process a service has run as, in order. */
  output(name: string): string;
  /** Send `signal` (default SIGKILL) and wait for the process to exit (up to `timeoutMs`). */
  kill(name: ServiceName, signal?: NodeJS.Signals, timeoutMs?: number): Promise<Exit>;
  /** Start a service again, with the environment it had. */
  restart(name: ServiceName): Promise<Proc>;
  /** GET a path on the api ("api" while it runs, else a replica that runs) and parse the JSON. */
  get(path: string): Promise<any>;
  /** Poll GET / until `pred` holds; returns that state. */
  waitState(what: string, pred: (state: any) => unknown, timeoutMs?: number): Promise<any>;
  /** Poll GET / until the backlog is done. */
  waitDone(timeoutMs?: number): Promise<any>;
  /** Ready messages in a queue of this cluster. */
  depth(queue: string): Promise<number>;
  /** SIGKILL whatever still runs (the launcher's services too), stop the sampler, close the database handle and the broker. */
  stopAll(): Promise<void>;
}

/**
 * A set of services run as processes on `place`, with `faultDefaults` overridden by `env`.
 * Start them by name: `await c.start("api"); await c.start("leader-a"); await c.start("agent-1")`.
 */
export async function startCluster(place: TestPlace, env: Record<string, string> = {}): Promise<Cluster> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const shared: Record<string, string> = { ...place.env, ...faultDefaults, ...env, RTB_API_HOST: `127.0.0.1:${port}` };
  const handle = openTestDb(place);
  const sampler = sampleOutstanding(handle.db);
  const procs = new Map<string, Proc[]>();
  const envs = new Map<string, Record<string, string>>();
  // api replicas other than "api": each its own port, kept across its restarts.
  const replicaPorts = new Map<string, number>();
  const urlOf = async (name: string) => {
    if (name === "api") return url;
    if (!replicaPorts.has(name)) replicaPorts.set(name, await freePort());
    return `http://127.0.0.1:${replicaPorts.get(name)}`;
  };
  // Where GET goes: "api" while it runs (or was never replaced), else the first replica running.
  const liveUrl = () => {
    if (procs.get("api")?.at(-1)?.running()) return url;
    const replica = [...replicaPorts.keys()].find((n) => procs.get(n)?.at(-1)?.running());
    return replica ? `http://127.0.0.1:${replicaPorts.get(replica)}` : url;
  };
  let broker: Promise<Broker> | undefined;
  const brokerOnce = () =>
    (broker ??= connectBrokerFromConfig(loadApiConfig(shared), testLogger("check")).catch((err: unknown) => {
      broker = undefined;
      throw err;
    }));

  const current = (name: string) => {
    const p = procs.get(name)?.at(-1);
    if (!p) throw new Error(`${name} was never started`);
    return p;
  };

  async function waitReady(name: string, p: Proc, line: RegExp, count = 1) {
    const deadline = Date.now() + 30_000;
    while ((p.output().match(line)?.length ?? 0) < count) {
      // A process that exited is not coming back: fail at once, with its output.
      if (!p.running()) throw new Error(`${name} exited before it was ready; its output:\n${p.output().slice(-4000)}`);
      if (Date.now() > deadline) throw new Error(`timed out after 30000 ms waiting for ${name} to be ready; its output:\n${p.output().slice(-4000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async function launch(name: string, extra: Record<string, string>): Promise<Proc> {
    const kind = kindOf(name);
    if (!kind) throw new Error(`unknown service name ${name}: use "api", "leader-<x>" or "agent-<x>"`);
    if (procs.get(name)?.at(-1)?.running()) throw new Error(`${name} is already running`);
    const id: Record<string, string> =
      kind === "leader"
        ? { RTB_LEADER_ID: name }
        : kind === "agent"
          ? { RTB_AGENT_ID: name }
          : // Kept across restarts, as a container's or the launcher's api keeps its id: a restarted api takes its own duty leases back at once.
            name === "api"
            ? { RTB_API_ID: "api" }
            : { RTB_API_ID: name, RTB_API_HOST: new URL(await urlOf(name)).host };
    const p = run(entries[kind], { ...shared, ...extra, ...id });
    procs.set(name, [...(procs.get(name) ?? []), p]);
    await waitReady(name, p, readyLine[kind]);
    return p;
  }

  let enqueued = 0;
  const cluster: Cluster = {
    place,
    env: shared,
    url,
    urlOf,
    maxQueue: Number(shared.RTB_BROADCAST_MAX_QUEUE!),
    get total() {
      return Number(shared.RTB_SEED_UNITS) + enqueued;
    },
    async enqueue(units) {
      const res = await fetch(`${liveUrl()}/units`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(units) });
      const body = await res.json();
      if (res.status !== 201) throw new Error(`POST /units answered ${res.status}: ${JSON.stringify(body)}`);
      enqueued += units.length;
      return body;
    },
    async post(path, body) {
      const res = await fetch(`${liveUrl()}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body ?? {}) });
      return { status: res.status, body: await res.json() };
    },
    expectUnits(n) {
      enqueued += n;
    },
    db: handle.db,
    sampler,
    broker: brokerOnce,
    start(name, extra = {}) {
      envs.set(name, extra);
      return launch(name, extra);
    },
    async startLauncher(extra = {}) {
      const p = run("scripts/start.ts", { ...shared, ...extra });
      procs.set("launcher", [...(procs.get("launcher") ?? []), p]);
      const agents = Number(extra.RTB_AGENTS ?? shared.RTB_AGENTS ?? 2);
      await waitReady("the launcher's services", p, /"msg":"(agent ready|leader ready|api listening)/g, agents + 2);
      return p;
    },
    proc: current,
    output: (name) => (procs.get(name) ?? []).map((p) => p.output()).join(""),
    async kill(name, signal = "SIGKILL", timeoutMs = 30_000) {
      const p = current(name);
      if (!p.running()) throw new Error(`${name} is not running`);
      p.child.kill(signal);
      return exitWithin(p, timeoutMs, `${name} (${signal})`);
    },
    restart(name) {
      return launch(name, envs.get(name) ?? {});
    },
    get: (path) => getJson(`${liveUrl()}${path}`),
    async waitState(what, pred, timeoutMs = 40_000) {
      try {
        return await waitFor(
          what,
          async () => {
            const s = await cluster.get("/");
            return pred(s) ? s : null;
          },
          timeoutMs,
          100,
        );
      } catch (err) {
        throw new Error(`${(err as Error).message}\n${await diagnose(cluster, [...procs.keys()])}`);
      }
    },
    waitDone(timeoutMs = 40_000) {
      return cluster.waitState("every unit to finish (GET / done)", (s) => s.done === true, timeoutMs);
    },
    async depth(queue) {
      const q = await (await brokerOnce()).inspectQueue(queue);
      if (!q) throw new Error(`the broker did not say how deep ${queue} is (not connected)`);
      return q.messages;
    },
    async stopAll() {
      // The services of a launcher still running, by their latest pid (an earlier one died, and
      // a launcher that exited by itself did so after all its services had).
      const launcherPids = new Map<string, number>();
      for (const p of (procs.get("launcher") ?? []).filter((l) => l.running())) {
        for (const m of p.output().matchAll(/\[start\] (\S+) started \(pid (\d+)\)/g)) launcherPids.set(m[1]!, Number(m[2]));
      }
      const all = [...procs.values()].flat();
      for (const p of all) if (p.running()) p.child.kill("SIGKILL");
      await Promise.all(all.map((p) => p.exit));
      // The launcher's services stop by themselves when it dies (their IPC channel closes); make sure.
      for (const pid of launcherPids.values()) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
      await sampler.stop();
      await handle.close();
      await broker?.then((b) => b.close()).catch(() => {});
    },
  };
  return cluster;
}

/** What a test that timed out needs to see: the api's state, units not finished, each service's warnings. */
async function diagnose(cluster: Cluster, names: string[]): Promise<string> {
  const parts: string[] = [];
  parts.push(`GET /: ${await cluster.get("/").then((s) => JSON.stringify(s), (err: Error) => `unavailable (${err.message})`)}`);
  const stuck = await sql<{ id: number; status: string; attempt: number; events: unknown }>`
    SELECT u.id, u.status, u.attempt,
      (SELECT json_agg(json_build_object('attempt', e.attempt, 'status', e.status, 'source', e.source, 'at', e.at) ORDER BY e.id) FROM unit_events e WHERE e.unit_id = u.id) AS events
    FROM units u WHERE u.status NOT IN ${statusList(TERMINAL)} ORDER BY u.updated_at LIMIT 5`
    .execute(cluster.db)
    .then((r) => r.rows, (err: Error) => `unavailable (${err.message})`);
  parts.push(`units not finished (oldest first): ${JSON.stringify(stuck)}`);
  for (const name of names) {
    const p = cluster.proc(name);
    const state = p.running() ? `running (pid ${p.pid})` : `exited (${p.child.exitCode ?? p.child.signalCode})`;
    const warnings = logLines(cluster.output(name)).filter((l) => typeof l.level === "number" && l.level >= 40);
    parts.push(`${name}: ${state}; ${warnings.length} warnings/errors; last: ${warnings.slice(-5).map((l) => JSON.stringify(l)).join("\n  ")}`);
  }
  return parts.join("\n");
}

/** Units in `processing` whose current attempt was started by `agentId` (from the timeline). */
export async function unitsHeldBy(db: DbHandle["db"], agentId: string): Promise<{ id: number; attempt: number }[]> {
  const { rows } = await sql<{ id: number; attempt: number }>`
    SELECT u.id, u.attempt FROM units u
    WHERE u.status = 'processing' AND EXISTS (
      SELECT 1 FROM unit_events e
      WHERE e.unit_id = u.id AND e.attempt = u.attempt AND e.status = 'processing' AND e.source = ${`agent:${agentId}`})
    ORDER BY u.id`.execute(db);
  return rows;
}

/** Who recorded the terminal (success/error) event of each (unit, attempt). */
export async function finishedBy(db: DbHandle["db"], units: { id: number; attempt: number }[]): Promise<Map<number, string>> {
  const out = new Map<number, string>();
  for (const u of units) {
    const { rows } = await sql<{ source: string }>`
      SELECT source FROM unit_events WHERE unit_id = ${u.id} AND attempt = ${u.attempt} AND status IN ${statusList(OUTCOMES)}`.execute(db);
    if (rows[0]) out.set(u.id, rows[0].source);
  }
  return out;
}

/**
 * After a fault run: wait for the backlog to drain (GET / done), then check it with the
 * product's checker (`expectRunSettled`: checkSystem expecting the run done, with the peak the
 * cluster's sampler saw; every seeded unit success or error; the queues worked off; nothing
 * dead-lettered). Returns the final GET /.
 */
export async function expectSettled(cluster: Cluster, timeoutMs = 40_000, opts: { cancelled?: number } = {}): Promise<any> {
  const state = await cluster.waitDone(timeoutMs);
  await expectRunSettled({ db: cluster.db, broker: await cluster.broker(), env: cluster.env, sampler: cluster.sampler, total: cluster.total, cancelled: opts.cancelled });
  return state;
}

/**
 * For a file of fault tests: a fresh place (database + broker names) before each test, and
 * after it the cluster stopped (whatever still runs is killed) and the place dropped.
 */
export function clusterPerTest(): { readonly place: TestPlace; start(env?: Record<string, string>): Promise<Cluster> } {
  const place = useTestPlace({ perTest: true });
  return {
    place,
    async start(env = {}) {
      const cluster = await startCluster(place, env);
      place.own({ stop: () => cluster.stopAll() });
      return cluster;
    },
  };
}

/**
 * After a fault: wait until schedule `name` has fired an occurrence less than 2 s ago (it
 * caught up), pause it, and return it with the occurrences due from its creation to its last
 * firing; its units count into the cluster's `total`.
 */
export async function catchUpAndPause(c: Cluster, name: string): Promise<{ schedule: any; occurrences: number }> {
  await waitFor("the schedule to catch up", async () => {
    const sc = await c.get(`/schedules/${name}`);
    return sc.lastFired !== null && Date.now() - Date.parse(sc.lastFired.occurrence) < 2_000;
  }, 30_000, 200);
  const paused = await c.post(`/schedules/${name}/pause`);
  if (paused.status !== 200) throw new Error(`POST /schedules/${name}/pause answered ${paused.status}: ${JSON.stringify(paused.body)}`);
  const schedule = await c.get(`/schedules/${name}`);
  c.expectUnits(schedule.fired);
  const occurrences = Math.floor(Date.parse(schedule.lastFired.occurrence) / 1000) - Math.floor(Date.parse(schedule.createdAt) / 1000);
  return { schedule, occurrences };
}

/** A run slow enough to still be going when a fault hits it (300 units of 50-150 ms each). */
export const midRunEnv = { RTB_SEED_UNITS: "300", RTB_AGENT_WORK_MIN_MS: "50", RTB_AGENT_WORK_MAX_MS: "150" };

/** Start the api, `leaders` in order (the first becomes the outbox's active consumer), agent-1 and agent-2; then GET /go. */
export async function startAllAndGo(c: Cluster, leaders: ServiceName[] = ["leader-1"]): Promise<any> {
  await c.start("api");
  for (const id of leaders) await c.start(id);
  await c.start("agent-1");
  await c.start("agent-2");
  return c.get("/go");
}
