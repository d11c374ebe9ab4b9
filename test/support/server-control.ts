import { setTimeout as sleep } from "node:timers/promises";
import { testServers, type Servers } from "./servers.ts";
import { pgStart, pgStop, postgresAnswers, rabbitAnswers, rabbitCtl, type OwnedRabbit } from "./owned-servers.ts";

/**
 * Taking a PostgreSQL or RabbitMQ down, and bringing it back, for the tests in test/disruptive
 * (which vitest runs alone, after every other file: see vitest.config.ts). Only ever the
 * servers the disruptive project owns (owned-servers.ts: a throwaway cluster and node that
 * global-setup.ts started for it): PostgreSQL with `pg_ctl stop -m fast` / `pg_ctl start`,
 * RabbitMQ with `rabbitmqctl -n <node> stop_app`, then `start_app` and `await_startup` (the
 * Erlang node stays up, the AMQP listener, queues and message store stop and are recovered
 * from disk: to a client it is a broker restart). Asked to take down any other server (the
 * shared ones a developer or CI runs), it refuses before touching anything.
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
  origin: Servers["origin"];
}

export interface OutageOptions {
  /** The server stays down at least this long (ms), counted from when it stopped answering. */
  downMs: number;
  /**
   * Runs as soon as the server no longer answers (observe the system here). With stop/start
   * The server stays down until it settles, so keep it bounded (waitFor with a timeout).
   */
  whileDown?: () => Promise<void>;
}

export interface OutageReport {
  server: ServerName;
  /** How it was done, e.g. "rabbitmqctl -n rtb-test-x@localhost stop_app / start_app". */
  how: string;
  /** When it was first seen not answering, and when it answered again (ms since the epoch). */
  downAt: number;
  upAt: number;
  /** From the stop request until the server stopped answering. */
  stoppingMs: number;
  /** From when it stopped answering until it answered again. */
  downMs: number;
  /** From the start request until it answered. */
  startingMs: number;
}

interface Control {
  how: string;
  stop(): Promise<void>;
  start(): Promise<void>;
}

const LABEL = { database: "PostgreSQL", broker: "RabbitMQ" } as const;
/** Generous: a server start on a loaded CI machine can take a while; this is not an assertion. */
const ANSWER_TIMEOUT_MS = 120_000;

const inFlight = new Set<Promise<unknown>>();

function currentServers(): ControlledServers {
  return testServers();
}

function address(server: ServerName, s: ControlledServers): string {
  const x = server === "database" ? s.db : s.broker;
  return `${x.host}:${x.port}`;
}

/**
 * Take `server` down for `downMs` (at least), run `whileDown` meanwhile, start it again and
 * wait until it answers. Fails, before touching anything, when it is not a server the suite owns.
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
  const control = controlFor(server, s);
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
      console.warn(`server-control: ${label} answered again before this test started it: the outage was shorter than asked`);
    }
    startAsked = Date.now();
    const up = answering();
    if (stopped || !(await serverAnswers(server, s))) await control.start().catch((err: unknown) => errors.push(err));
    await up;
  }

  if (errors.length > 0) throw errors[0];
  return { server, how: control.how, downAt, upAt, stoppingMs: downAt - asked, downMs: upAt - downAt, startingMs: upAt - startAsked };
}

/** true when the server accepts a login and answers (PostgreSQL: SELECT 1; RabbitMQ: an AMQP connection). */
export async function serverAnswers(server: ServerName, s: ControlledServers = currentServers()): Promise<boolean> {
  if (server === "database") return postgresAnswers({ ...s.db, database: "postgres" });
  const b = s.broker;
  return rabbitAnswers(`amqp://${encodeURIComponent(b.user)}:${encodeURIComponent(b.password)}@${b.host}:${b.port}/${encodeURIComponent(b.vhost)}`);
}

/** Wait until the server answers (see serverAnswers). */
export async function waitForServer(server: ServerName, timeoutMs = ANSWER_TIMEOUT_MS, s: ControlledServers = currentServers()): Promise<void> {
  await waitUntil(`${LABEL[server]} at ${address(server, s)} to answer`, () => serverAnswers(server, s), timeoutMs);
}

function controlFor(server: ServerName, s: ControlledServers): Control {
  if (server === "database") {
    const p = s.origin.db;
    if (p.kind !== "owned") throw new Error(notOwned(server, s));
    return { how: `pg_ctl -D ${p.dataDir} stop -m fast / start`, stop: () => pgStop(p), start: () => pgStart(p) };
  }
  const r = ownedRabbit(s);
  return {
    how: `rabbitmqctl -n ${r.node} stop_app / start_app + await_startup`,
    stop: () => rabbitCtl(r, ["stop_app"]).then(() => {}),
    start: async () => {
      await rabbitCtl(r, ["start_app"]);
      await rabbitCtl(r, ["await_startup", "--timeout", "120"]);
    },
  };
}

function ownedRabbit(s: ControlledServers): OwnedRabbit {
  const r = s.origin.broker;
  if (r.kind !== "owned") throw new Error(notOwned("broker", s));
  return r;
}

const notOwned = (server: ServerName, s: ControlledServers) =>
  `refusing to stop ${LABEL[server]} at ${address(server, s)}: the tests only ever stop or reconfigure servers of their own ` +
  "(the disruptive project's, started by test/support/global-setup.ts); run this test in that project (test/disruptive)";

async function waitUntil(what: string, fn: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

/**
 * Set the owned broker's max_message_size at runtime (new channels see it at once) and return
 * how to put the previous value back. Only on the disruptive project's own node: it refuses
 * any other broker.
 */
export async function setBrokerMaxMessageSize(bytes: number, servers: ControlledServers = currentServers()): Promise<() => Promise<void>> {
  const r = ownedRabbit(servers);
  const out = await rabbitCtl(r, ["eval", "application:get_env(rabbit, max_message_size)."]);
  const previous = /\{ok,(\d+)\}/.exec(out)?.[1];
  if (!previous) throw new Error(`rabbitmqctl eval: unexpected answer for max_message_size: ${out}`);
  const set = (n: string) => rabbitCtl(r, ["eval", `application:set_env(rabbit, max_message_size, ${n}).`]).then(() => {});
  await set(String(bytes));
  return () => set(previous);
}
