import { execFile, spawn } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { connect } from "amqplib";
import { inject } from "vitest";
import type { ServerOrigin } from "./servers.ts";

/**
 * Taking the run's real PostgreSQL or RabbitMQ down, and bringing it back, for the tests in
 * test/disruptive (which vitest runs alone, after every other file: see vitest.config.ts).
 *
 * How depends on where the server came from (servers.ts):
 * - RTB_TEST_DB_RESTART / RTB_TEST_BROKER_RESTART, when set, always win: a shell command that
 *   stops the server, waits $RTB_TEST_DOWN_SECONDS seconds, starts it again and exits 0;
 * - this machine (localhost, found on the default port): PostgreSQL with
 *   `pg_ctlcluster --skip-systemctl-redirect <version> <cluster> stop|start` (the cluster
 *   listening on that port, from `pg_lsclusters`; needs root or the postgres user), RabbitMQ
 *   with `rabbitmqctl stop_app`, then `start_app` and `await_startup` (the Erlang node stays
 *   up, the AMQP listener, queues and message store stop and are recovered from disk: to a
 *   client it is a broker restart);
 * - a container started for the run: `docker stop` / `docker start` of that container (its
 *   host port is fixed, so it comes back on the same address);
 * - a server given by RTB_TEST_DB_HOST / RTB_TEST_BROKER_HOST without a restart command: the
 *   test fails, naming the variable to set.
 *
 * Every outage ends with the server started again and answering (a real login and query, not
 * only an open port), also when the test fails; `outagesSettled()` in an afterEach waits for
 * an outage a timed-out test left running.
 */

export type ServerName = "database" | "broker";

/** The part of the run's `rtbServers` this module needs. */
export interface ControlledServers {
  db: { host: string; port: number; user: string; password: string };
  broker: { host: string; port: number; user: string; password: string; vhost: string };
  origin: { db: ServerOrigin; broker: ServerOrigin };
}

export interface OutageOptions {
  /** The server stays down at least this long (ms), counted from when it stopped answering. */
  downMs: number;
  /**
   * Runs as soon as the server no longer answers (observe the system here). With stop/start
   * steps the server stays down until it settles, so keep it bounded (waitFor with a timeout);
   * with a restart command, the command decides when the server comes back.
   */
  whileDown?: () => Promise<void>;
}

export interface OutageReport {
  server: ServerName;
  /** How it was done, e.g. "rabbitmqctl stop_app / start_app". */
  how: string;
  /** When it was first seen not answering, and when it answered again (ms since the epoch). */
  downAt: number;
  upAt: number;
  /** From the stop request until the server stopped answering. */
  stoppingMs: number;
  /** From when it stopped answering until it answered again. */
  downMs: number;
  /** From the start request (or the end of the restart command) until it answered. */
  startingMs: number;
}

type Control =
  | { how: string; kind: "steps"; stop(): Promise<void>; start(): Promise<void> }
  | { how: string; kind: "command"; run(downMs: number): Promise<void> };

const RESTART_VARIABLE = { database: "RTB_TEST_DB_RESTART", broker: "RTB_TEST_BROKER_RESTART" } as const;
const LABEL = { database: "PostgreSQL", broker: "RabbitMQ" } as const;
/** Generous: a server start on a loaded CI machine can take a while; this is not an assertion. */
const ANSWER_TIMEOUT_MS = 120_000;
const COMMAND_TIMEOUT_MS = 120_000;

const inFlight = new Set<Promise<unknown>>();

function currentServers(): ControlledServers {
  return inject("rtbServers");
}

function address(server: ServerName, s: ControlledServers): string {
  const x = server === "database" ? s.db : s.broker;
  return `${x.host}:${x.port}`;
}

/**
 * Take `server` down for `downMs` (at least), run `whileDown` meanwhile, start it again and
 * wait until it answers. Fails, before touching anything, when this run cannot restart it.
 */
export function outage(server: ServerName, opts: OutageOptions, servers: ControlledServers = currentServers()): Promise<OutageReport> {
  const p = runOutage(server, opts, servers);
  inFlight.add(p);
  const forget = () => inFlight.delete(p);
  p.then(forget, forget);
  return p;
}

/** An outage as short as the server allows: stop, start, wait until it answers. */
export function restartServer(server: ServerName, servers: ControlledServers = currentServers()): Promise<OutageReport> {
  return outage(server, { downMs: 0 }, servers);
}

/** Wait for every outage started in this file to end (server back up). For afterEach. */
export async function outagesSettled(): Promise<void> {
  await Promise.allSettled([...inFlight]);
}

async function runOutage(server: ServerName, opts: OutageOptions, s: ControlledServers): Promise<OutageReport> {
  const control = await controlFor(server, s);
  const label = `${LABEL[server]} at ${address(server, s)}`;
  if (!(await serverAnswers(server, s))) throw new Error(`${label} does not answer before the outage; nothing to take down`);

  const asked = Date.now();
  let downAt = 0;
  let startAsked = 0;
  let upAt = 0;
  const errors: unknown[] = [];
  // Polled from the start request on, so `upAt` is when it answered, not when the command returned.
  const answering = () =>
    waitForServer(server, ANSWER_TIMEOUT_MS, s).then(
      () => void (upAt ||= Date.now()),
      (err: unknown) => void errors.push(err),
    );
  /** Wait until the server stops answering (or `gaveUp` says it never will), then hold it down. */
  const observe = async (holdMs: number, gaveUp: () => boolean) => {
    let down = false;
    await waitUntil(`${label} to stop answering (${control.how})`, async () => (down = !(await serverAnswers(server, s))) || gaveUp(), ANSWER_TIMEOUT_MS);
    if (!down) throw new Error(`${control.how}: returned, but ${label} was never seen down`);
    downAt = Date.now();
    const results = await Promise.allSettled([sleep(holdMs), opts.whileDown?.()]);
    for (const r of results) if (r.status === "rejected") errors.push(r.reason);
  };

  if (control.kind === "steps") {
    let stopped = false;
    try {
      await control.stop();
      stopped = true;
      await observe(opts.downMs, () => false);
    } catch (err) {
      errors.push(err);
    } finally {
      // Always bring it back, whatever happened above (unless it never went down).
      if (stopped && downAt && (await serverAnswers(server, s))) {
        console.warn(`server-control: ${label} answered again before this test started it: something else on this machine started it, the outage was shorter than asked`);
      }
      startAsked = Date.now();
      const up = answering();
      if (stopped || !(await serverAnswers(server, s))) await control.start().catch((err: unknown) => errors.push(err));
      await up;
    }
  } else {
    // The command holds the server down itself ($RTB_TEST_DOWN_SECONDS); watch it meanwhile.
    let exited = false;
    const command = control.run(opts.downMs).finally(() => {
      exited = true;
    });
    const [c, o] = await Promise.allSettled([command, observe(0, () => exited)]);
    startAsked = Date.now();
    if (c.status === "rejected") errors.push(c.reason);
    if (o.status === "rejected") errors.push(o.reason);
    await answering();
  }

  if (errors.length > 0) throw errors[0];
  return { server, how: control.how, downAt, upAt, stoppingMs: downAt - asked, downMs: upAt - downAt, startingMs: upAt - startAsked };
}

/** true when the server accepts a login and answers (PostgreSQL: SELECT 1; RabbitMQ: an AMQP connection). */
export async function serverAnswers(server: ServerName, s: ControlledServers = currentServers()): Promise<boolean> {
  if (server === "database") {
    const client = new pg.Client({ ...s.db, database: "postgres", connectionTimeoutMillis: 2_000 });
    client.on("error", () => {});
    try {
      await client.connect();
      await client.query("SELECT 1");
      return true;
    } catch {
      return false;
    } finally {
      await client.end().catch(() => {});
    }
  }
  const b = s.broker;
  try {
    const conn = await connect(
      `amqp://${encodeURIComponent(b.user)}:${encodeURIComponent(b.password)}@${b.host}:${b.port}/${encodeURIComponent(b.vhost)}`,
      { timeout: 2_000 },
    );
    conn.on("error", () => {});
    await conn.close().catch(() => {});
    return true;
  } catch {
    return false;
  }
}

/** Wait until the server answers (see serverAnswers). */
export async function waitForServer(server: ServerName, timeoutMs = ANSWER_TIMEOUT_MS, s: ControlledServers = currentServers()): Promise<void> {
  await waitUntil(`${LABEL[server]} at ${address(server, s)} to answer`, () => serverAnswers(server, s), timeoutMs);
}

/**
 * Start the server if it does not answer and this run knows how (stop/start steps), then wait
 * for it. For the end of a run (global-setup), after a test process died mid-outage. Never throws.
 */
export async function ensureServerUp(server: ServerName, s: ControlledServers): Promise<void> {
  if (await serverAnswers(server, s)) return;
  try {
    const control = await controlFor(server, s);
    if (control.kind === "steps") await control.start();
    await waitForServer(server, 30_000, s);
  } catch (err) {
    console.error(`rtb tests: ${LABEL[server]} at ${address(server, s)} is down after the run and could not be started: ${String(err)}`);
  }
}

async function controlFor(server: ServerName, s: ControlledServers): Promise<Control> {
  const variable = RESTART_VARIABLE[server];
  const command = process.env[variable];
  if (command) return commandControl(command, variable);
  const origin = server === "database" ? s.origin.db : s.origin.broker;
  switch (origin.kind) {
    case "env":
      throw new Error(
        `this test restarts ${LABEL[server]}, which comes from ${origin.variable} (${address(server, s)}): set ${variable} to a shell ` +
          `command that stops it, waits $RTB_TEST_DOWN_SECONDS seconds, starts it again and exits 0 ` +
          `(for example: ${server === "database" ? "'docker stop pg && sleep $RTB_TEST_DOWN_SECONDS && docker start pg'" : "'docker stop rabbit && sleep $RTB_TEST_DOWN_SECONDS && docker start rabbit'"})`,
      );
    case "localhost":
      return server === "database" ? localPostgres(s.db.port) : localRabbit();
    case "container":
      return containerControl(origin.containerId);
  }
}

/** The local cluster listening on `port`, driven with pg_ctlcluster (Debian/Ubuntu postgresql-common). */
async function localPostgres(port: number): Promise<Control> {
  const hint = `set RTB_TEST_DB_RESTART to a command that restarts the PostgreSQL on localhost:${port}`;
  let listing: string;
  try {
    listing = await run("pg_lsclusters", ["--no-header"]);
  } catch (err) {
    throw new Error(`cannot find the local PostgreSQL cluster to restart (${(err as Error).message}); ${hint}`);
  }
  // "15 main 5432 online postgres /var/lib/postgresql/15/main /var/log/..."
  const cluster = listing
    .split("\n")
    .map((line) => line.trim().split(/\s+/))
    .find((f) => f.length >= 3 && Number(f[2]) === port);
  if (!cluster) throw new Error(`no cluster in pg_lsclusters listens on port ${port}; ${hint}`);
  const [version, name] = cluster as [string, string];
  const ctl = (action: string, ...extra: string[]) => () =>
    run("pg_ctlcluster", ["--skip-systemctl-redirect", ...extra, version, name, action]).then(
      () => {},
      (err: CommandError) => {
        // Exit 2 on start: already running (something else on this machine started it).
        if (action === "start" && err.exitCode === 2) return;
        throw new Error(`pg_ctlcluster ${version} ${name} ${action} failed (it needs root or the postgres user): ${err.message}; or ${hint}`);
      },
    );
  return { how: `pg_ctlcluster ${version} ${name} stop --mode fast / start`, kind: "steps", stop: ctl("stop", "--mode", "fast"), start: ctl("start") };
}

function localRabbit(): Control {
  const hint = "or set RTB_TEST_BROKER_RESTART to a command that restarts the RabbitMQ on this machine";
  const ctl = (...args: string[]) =>
    run("rabbitmqctl", args).then(
      () => {},
      (err: Error) => {
        throw new Error(`rabbitmqctl ${args.join(" ")} failed (it needs root or the rabbitmq user): ${err.message}; ${hint}`);
      },
    );
  return {
    how: "rabbitmqctl stop_app / start_app + await_startup",
    kind: "steps",
    stop: () => ctl("stop_app"),
    start: async () => {
      await ctl("start_app");
      await ctl("await_startup", "--timeout", "120");
    },
  };
}

async function containerControl(containerId: string): Promise<Control> {
  const { getContainerRuntimeClient } = await import("testcontainers");
  const client = await getContainerRuntimeClient();
  const container = client.container.getById(containerId);
  return {
    how: `docker stop / start ${containerId.slice(0, 12)}`,
    kind: "steps",
    // The timeout is in ms: then Docker kills it (PostgreSQL's image stops with SIGINT, a fast shutdown).
    stop: () => client.container.stop(container, { timeout: 10_000 }),
    // 304: already running.
    start: () => client.container.start(container).catch((err: { statusCode?: number }) => {
      if (err.statusCode !== 304) throw err;
    }),
  };
}

function commandControl(command: string, variable: string): Control {
  return {
    how: `${variable}: ${command}`,
    kind: "command",
    run: (downMs) =>
      new Promise<void>((resolve, reject) => {
        const seconds = String(Math.max(0, Math.ceil(downMs / 1000)));
        const child = spawn("/bin/sh", ["-c", command], {
          env: { ...process.env, RTB_TEST_DOWN_SECONDS: seconds, RTB_TEST_DOWN_MS: String(downMs) },
          stdio: ["ignore", "ignore", "pipe"],
        });
        let stderr = "";
        child.stderr.on("data", (chunk: Buffer) => void (stderr = (stderr + chunk.toString()).slice(-2_000)));
        const timer = setTimeout(() => child.kill("SIGKILL"), COMMAND_TIMEOUT_MS + downMs);
        child.once("error", (err) => {
          clearTimeout(timer);
          reject(new Error(`${variable} could not run: ${err.message}`));
        });
        child.once("exit", (code, signal) => {
          clearTimeout(timer);
          if (code === 0) resolve();
          else reject(new Error(`${variable} (${command}) exited with ${signal ?? `code ${code}`}: ${stderr.trim()}`));
        });
      }),
  };
}

class CommandError extends Error {
  readonly exitCode: number | null;
  constructor(message: string, exitCode: number | null) {
    super(message);
    this.exitCode = exitCode;
  }
}

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: COMMAND_TIMEOUT_MS }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const output = `${stdout}\n${stderr}`.trim();
      const code = typeof err.code === "number" ? err.code : null;
      reject(new CommandError(`${err.message.split("\n")[0]}${output ? `: ${output}` : ""}`, code));
    });
  });
}

async function waitUntil(what: string, fn: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

/**
 * Set the broker's max_message_size at runtime (new channels see it at once) and return how
 * to put the previous value back. It changes the broker for every test running meanwhile:
 * only for the disruptive project, which runs alone.
 */
export async function setBrokerMaxMessageSize(bytes: number): Promise<() => Promise<void>> {
  const out = await run("rabbitmqctl", ["eval", "application:get_env(rabbit, max_message_size)."]);
  const previous = /\{ok,(\d+)\}/.exec(out)?.[1];
  if (!previous) throw new Error(`rabbitmqctl eval: unexpected answer for max_message_size: ${out}`);
  const set = (n: string) => run("rabbitmqctl", ["eval", `application:set_env(rabbit, max_message_size, ${n}).`]).then(() => {});
  await set(String(bytes));
  return () => set(previous);
}
