import { execFile, execFileSync } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { connect } from "amqplib";
import pg from "pg";

/**
 * Throwaway servers the test suite owns, for the tests that stop and restart a server
 * (test/disruptive): a PostgreSQL cluster made with `initdb` and run with `pg_ctl`, and a
 * RabbitMQ node with a name of its own, each on free ports and in a temporary folder. Nothing
 * here touches the PostgreSQL or RabbitMQ a developer or CI already runs: their configuration
 * files are not read (the node gets its own rabbitmq.conf, rabbitmq-env.conf, plugins file and
 * Erlang cookie), and their ports, data and node names are never used.
 *
 * initdb and postgres refuse to run as root: as root, the cluster runs as the `postgres` user
 * (or RTB_TEST_PG_RUN_AS), its folder given to that user. RabbitMQ's own scripts are used
 * directly (Debian's /usr/sbin wrappers would switch to the rabbitmq user and its cookie).
 *
 * Where the tools are: RTB_TEST_PG_BINDIR when set (only there), else `pg_config --bindir`,
 * the newest /usr/lib/postgresql/<n>/bin, or initdb on PATH; RTB_TEST_RABBITMQ_SBIN when set
 * (only there), else /usr/lib/rabbitmq/bin or rabbitmq-server on PATH.
 */

/** A PostgreSQL cluster of the suite's own (paths and how to run its pg_ctl). */
export interface OwnedPostgres {
  kind: "owned";
  bindir: string;
  dataDir: string;
  /** The user pg_ctl runs as (this machine's root cannot run PostgreSQL); null: the current user. */
  runAs: string | null;
  port: number;
}

/** A RabbitMQ node of the suite's own. */
export interface OwnedRabbit {
  kind: "owned";
  sbin: string;
  node: string;
  /** Its folder: configuration, data, logs, pid file. */
  dir: string;
  /** HOME for the node and rabbitmqctl: where its own Erlang cookie is. */
  home: string;
  env: Record<string, string>;
  port: number;
}

export interface OwnedServers {
  root: string;
  db: { host: string; port: number; user: string; password: string };
  broker: { host: string; port: number; user: string; password: string; vhost: string };
  postgres: OwnedPostgres;
  rabbit: OwnedRabbit;
  /** Stop both and delete their folder. Never throws. */
  stop(): Promise<void>;
}

const PREFIX = "rtb-test-servers-";
const COMMAND_TIMEOUT_MS = 120_000;

class CommandError extends Error {}

/** Run a command; rejects with its output's end on failure or after `timeoutMs`. */
export function run(cmd: string, args: string[], opts: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: opts.timeoutMs ?? COMMAND_TIMEOUT_MS, env: { ...process.env, ...opts.env } }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const output = `${stdout}\n${stderr}`.trim();
      reject(new CommandError(`${cmd} ${args.join(" ")}: ${err.message.split("\n")[0]}${output ? `: ${output.slice(-2_000)}` : ""}`));
    });
  });
}

const isRoot = () => process.getuid?.() === 0;

function userExists(name: string): boolean {
  try {
    execFileSync("id", ["-u", name], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

function uidGid(name: string): { uid: number; gid: number } {
  return { uid: Number(execFileSync("id", ["-u", name]).toString().trim()), gid: Number(execFileSync("id", ["-g", name]).toString().trim()) };
}

function hasTools(dir: string | undefined, tools: string[]): dir is string {
  return !!dir && tools.every((t) => existsSync(path.join(dir, t)));
}

function onPath(tool: string): string | undefined {
  try {
    return path.dirname(execFileSync("sh", ["-c", `command -v ${tool}`]).toString().trim());
  } catch {
    return undefined;
  }
}

/** Where PostgreSQL's server binaries may be on this machine, most likely first. */
function postgresBindirs(): (string | undefined)[] {
  const dirs: (string | undefined)[] = [];
  try {
    dirs.push(execFileSync("pg_config", ["--bindir"], { stdio: ["ignore", "pipe", "ignore"] }).toString().trim());
  } catch {
    // no pg_config
  }
  if (existsSync("/usr/lib/postgresql")) {
    const versions = readdirSync("/usr/lib/postgresql").filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
    dirs.push(...versions.map((v) => `/usr/lib/postgresql/${v}/bin`));
  }
  dirs.push(onPath("initdb"));
  return dirs;
}

/** Where initdb and pg_ctl are (RTB_TEST_PG_BINDIR when set, and only there), or what is missing. */
export function findPostgresBindir(env = process.env): string {
  const candidates = env.RTB_TEST_PG_BINDIR ? [env.RTB_TEST_PG_BINDIR] : postgresBindirs();
  const found = candidates.find((d) => hasTools(d, ["initdb", "pg_ctl", "postgres"]));
  if (!found) {
    throw new Error(
      "the disruptive tests run a PostgreSQL of their own and need its server binaries (initdb, pg_ctl, postgres), found in none of " +
        `${candidates.filter(Boolean).join(", ") || "(no candidates)"}: install the PostgreSQL server (e.g. apt-get install postgresql) or set RTB_TEST_PG_BINDIR`,
    );
  }
  return found;
}

/** Where rabbitmq-server and rabbitmqctl are (RabbitMQ's own scripts), or what is missing. */
export function findRabbitSbin(env = process.env): string {
  const candidates = env.RTB_TEST_RABBITMQ_SBIN ? [env.RTB_TEST_RABBITMQ_SBIN] : ["/usr/lib/rabbitmq/bin", onPath("rabbitmq-server")];
  const found = candidates.find((d) => hasTools(d, ["rabbitmq-server", "rabbitmqctl"]));
  if (!found) {
    throw new Error(
      "the disruptive tests run a RabbitMQ node of their own and need rabbitmq-server and rabbitmqctl, found in none of " +
        `${candidates.filter(Boolean).join(", ")}: install RabbitMQ (e.g. apt-get install rabbitmq-server) or set RTB_TEST_RABBITMQ_SBIN`,
    );
  }
  return found;
}

/** Run a PostgreSQL tool of `pg`, as its user when this process is root. */
export function pgTool(p: Pick<OwnedPostgres, "bindir" | "runAs">, tool: string, args: string[]): Promise<string> {
  const bin = path.join(p.bindir, tool);
  return p.runAs ? run("runuser", ["-u", p.runAs, "--", bin, ...args]) : run(bin, args);
}

export const pgStop = (p: OwnedPostgres, mode: "fast" | "immediate" = "fast") => pgTool(p, "pg_ctl", ["-D", p.dataDir, "stop", "-m", mode, "-w", "-t", "60"]).then(() => {});
export const pgStart = (p: OwnedPostgres) => pgTool(p, "pg_ctl", ["-D", p.dataDir, "-l", path.join(p.dataDir, "server.log"), "start", "-w", "-t", "120"]).then(() => {});

/** Run rabbitmqctl against the owned node. */
export function rabbitCtl(r: OwnedRabbit, args: string[], timeoutMs = COMMAND_TIMEOUT_MS): Promise<string> {
  return run(path.join(r.sbin, "rabbitmqctl"), ["-n", r.node, ...args], { env: r.env, timeoutMs });
}

/** Free TCP ports on 127.0.0.1 (none of them the other's). */
export async function freePorts(n: number): Promise<number[]> {
  const { createServer } = await import("node:net");
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise<import("node:net").Server>((resolve, reject) => {
      const s = createServer();
      s.once("error", reject);
      s.listen(0, "127.0.0.1", () => resolve(s));
    })),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

export async function waitUntil(what: string, fn: () => Promise<boolean>, timeoutMs: number, detail: () => string = () => ""): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail()}`);
    await sleep(200);
  }
}

/** true when PostgreSQL accepts this login and answers SELECT 1 (within 2 s). */
export async function postgresAnswers(conn: pg.ClientConfig): Promise<boolean> {
  const client = new pg.Client({ ...conn, connectionTimeoutMillis: 2_000 });
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

/** true when RabbitMQ accepts an AMQP connection at this URL (within 2 s). */
export async function rabbitAnswers(url: string): Promise<boolean> {
  try {
    const conn = await connect(url, { timeout: 2_000 });
    conn.on("error", () => {});
    await conn.close().catch(() => {});
    return true;
  } catch {
    return false;
  }
}

export const tail = (file: string) => {
  try {
    return `; the end of ${file}:\n${readFileSync(file, "utf8").slice(-2_000)}`;
  } catch {
    return "";
  }
};

async function startPostgres(root: string, port: number): Promise<OwnedPostgres> {
  const bindir = findPostgresBindir();
  let runAs: string | null = null;
  if (isRoot()) {
    runAs = process.env.RTB_TEST_PG_RUN_AS || (userExists("postgres") ? "postgres" : userExists("nobody") ? "nobody" : null);
    if (!runAs) throw new Error("running as root, the owned PostgreSQL needs a user to run as (PostgreSQL refuses root): create a postgres user or set RTB_TEST_PG_RUN_AS");
    if (!existsSync("/usr/sbin/runuser") && !existsSync("/sbin/runuser") && !onPath("runuser")) throw new Error("running as root, the owned PostgreSQL is started with runuser (util-linux), which is missing");
  }
  const dataDir = path.join(root, "postgres");
  mkdirSync(dataDir, { mode: 0o700 });
  if (runAs) {
    const { uid, gid } = uidGid(runAs);
    chownSync(dataDir, uid, gid);
  }
  const p: OwnedPostgres = { kind: "owned", bindir, dataDir, runAs, port };
  await pgTool(p, "initdb", ["-D", dataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-instructions"]).catch(async (err: Error) => {
    // --no-instructions is PostgreSQL 14+; try without it.
    if (!/no-instructions/.test(err.message)) throw err;
    await pgTool(p, "initdb", ["-D", dataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8"]);
  });
  const conf = [
    "",
    "# rtb tests: a throwaway cluster on its own port, TCP on loopback only",
    `port = ${port}`,
    "listen_addresses = '127.0.0.1'",
    "unix_socket_directories = ''",
    "max_connections = 200",
    "fsync = off",
    "synchronous_commit = off",
    "full_page_writes = off",
    "shared_buffers = 64MB",
    "",
  ].join("\n");
  writeFileSync(path.join(dataDir, "postgresql.conf"), readFileSync(path.join(dataDir, "postgresql.conf"), "utf8") + conf);
  await pgStart(p).catch((err: Error) => {
    throw new Error(`${err.message}${tail(path.join(dataDir, "server.log"))}`);
  });
  await waitUntil(`the owned PostgreSQL on 127.0.0.1:${port}`, () => postgresAnswers({ host: "127.0.0.1", port, user: "postgres", password: "", database: "postgres" }), 60_000, () => tail(path.join(dataDir, "server.log")));
  return p;
}

/**
 * A RabbitMQ node's folder and environment, not started: its own rabbitmq.conf (AMQP on
 * 127.0.0.1:`port` only), empty rabbitmq-env.conf and plugins file, data and logs, and HOME
 * (`home`: where its Erlang cookie is; nodes of one cluster share one).
 */
export function prepareRabbitNode(opts: { dir: string; node: string; port: number; distPort: number; home?: string }): OwnedRabbit {
  const { dir, node, port, distPort } = opts;
  const sbin = findRabbitSbin();
  const home = opts.home ?? path.join(dir, "home");
  mkdirSync(home, { recursive: true, mode: 0o700 });
  mkdirSync(path.join(dir, "log"), { recursive: true });
  writeFileSync(path.join(dir, "enabled_plugins"), "[].\n");
  writeFileSync(path.join(dir, "rabbitmq-env.conf"), "");
  writeFileSync(
    path.join(dir, "rabbitmq.conf"),
    [`listeners.tcp.1 = 127.0.0.1:${port}`, "disk_free_limit.absolute = 50MB", "vm_memory_high_watermark.relative = 0.8", ""].join("\n"),
  );
  const env = {
    HOME: home,
    RABBITMQ_NODENAME: node,
    RABBITMQ_NODE_IP_ADDRESS: "127.0.0.1",
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_MNESIA_BASE: path.join(dir, "mnesia"),
    RABBITMQ_LOG_BASE: path.join(dir, "log"),
    RABBITMQ_ENABLED_PLUGINS_FILE: path.join(dir, "enabled_plugins"),
    RABBITMQ_CONFIG_FILE: path.join(dir, "rabbitmq.conf"),
    RABBITMQ_ADVANCED_CONFIG_FILE: path.join(dir, "advanced.config"),
    RABBITMQ_CONF_ENV_FILE: path.join(dir, "rabbitmq-env.conf"),
    RABBITMQ_PID_FILE: path.join(dir, "rabbitmq.pid"),
    // The distribution listens on loopback only, as the node's AMQP port does.
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: "-kernel inet_dist_use_interface {127,0,0,1}",
  };
  return { kind: "owned", sbin, node, dir, home, env, port };
}

/** Start a prepared node (`rabbitmq-server -detached`) and wait until it answers AMQP and has booted. */
export async function launchRabbit(r: OwnedRabbit): Promise<void> {
  await run(path.join(r.sbin, "rabbitmq-server"), ["-detached"], { env: r.env });
  const log = path.join(r.dir, "log", `${r.node}.log`);
  await waitUntil(`the owned RabbitMQ node ${r.node} on 127.0.0.1:${r.port}`, () => rabbitAnswers(`amqp://guest:guest@127.0.0.1:${r.port}/`), 120_000, () => tail(log));
  await rabbitCtl(r, ["await_startup", "--timeout", "120"]);
}

async function startRabbit(root: string, id: string, port: number, distPort: number): Promise<OwnedRabbit> {
  const r = prepareRabbitNode({ dir: path.join(root, "rabbitmq"), node: `rtb-test-${id}@localhost`, port, distPort });
  await launchRabbit(r);
  return r;
}

/** Stop the node (`rabbitmqctl stop <pid file>` waits for its process to end); not answering, kill it. */
function stopRabbit(r: OwnedRabbit, root: string): Promise<void> {
  return rabbitCtl(r, ["stop", path.join(r.dir, "rabbitmq.pid")], 60_000).then(
    () => {},
    () => killRabbitIn(r.dir, root),
  );
}

/**
 * Start an owned PostgreSQL and RabbitMQ (in parallel); what was started is stopped and
 * removed again when the other fails. Throws a message naming what is missing.
 */
export async function startOwnedServers(id: string): Promise<OwnedServers> {
  // Check for the tools before anything is created, so the message is about them alone.
  findPostgresBindir();
  findRabbitSbin();
  removeStaleOwnedServers();
  const root = mkdtempSync(path.join(tmpdir(), PREFIX));
  // The cluster's user must reach its folder inside this one.
  chmodSync(root, 0o755);
  writeFileSync(path.join(root, "owner.pid"), String(process.pid));
  const [pgPort, amqpPort, distPort] = await freePorts(3);
  const started = await Promise.allSettled([startPostgres(root, pgPort!), startRabbit(root, id, amqpPort!, distPort!)]);
  const [pgResult, rabbitResult] = started;
  const stop = async () => {
    if (rabbitResult.status === "fulfilled") await stopRabbit(rabbitResult.value, root);
    else await stopRabbitIn(root);
    if (pgResult.status === "fulfilled") await pgStop(pgResult.value, "immediate").catch(() => {});
    else await stopPostgresIn(root);
    rmSync(root, { recursive: true, force: true });
  };
  if (pgResult.status === "rejected" || rabbitResult.status === "rejected") {
    await stop();
    const reasons = started.filter((s) => s.status === "rejected").map((s) => String((s as PromiseRejectedResult).reason?.message ?? s));
    throw new Error(`cannot start the test suite's own servers: ${reasons.join("; ")}`);
  }
  return {
    root,
    db: { host: "127.0.0.1", port: pgPort!, user: "postgres", password: "" },
    broker: { host: "127.0.0.1", port: amqpPort!, user: "guest", password: "guest", vhost: "/" },
    postgres: pgResult.value,
    rabbit: rabbitResult.value,
    stop,
  };
}

/** Best-effort stop of a PostgreSQL left in `root` (a start that failed half way, a killed run). */
async function stopPostgresIn(root: string): Promise<void> {
  const dataDir = path.join(root, "postgres");
  if (!existsSync(path.join(dataDir, "postmaster.pid"))) return;
  // SIGQUIT: PostgreSQL's immediate shutdown.
  killIfOurs(path.join(dataDir, "postmaster.pid"), root, "SIGQUIT");
}

async function stopRabbitIn(root: string): Promise<void> {
  killRabbitIn(path.join(root, "rabbitmq"), root);
}

/** SIGKILL the node whose folder is `dir`, if its process is still the one started under `root`. */
export function killRabbitIn(dir: string, root: string): void {
  killIfOurs(path.join(dir, "rabbitmq.pid"), root, "SIGKILL");
}

/** Signal the process of a pid file, only if its command line names `root` (a pid may have been reused since). */
function killIfOurs(pidFile: string, root: string, signal: NodeJS.Signals): void {
  try {
    const pid = Number(readFileSync(pidFile, "utf8").split("\n")[0]!.trim());
    const command = execFileSync("ps", ["-o", "command=", "-p", String(pid)]).toString();
    if (command.includes(root)) process.kill(pid, signal);
  } catch {
    // no pid file, or gone already
  }
}

/** Folders left by runs whose process died before its teardown: stop what still runs there and delete them. */
function removeStaleOwnedServers(): void {
  removeStaleFolders(PREFIX, (root) => {
    void stopPostgresIn(root);
    void stopRabbitIn(root);
  });
}

/**
 * Folders `<tmp>/<prefix>*` whose owner (the pid in their owner.pid) is gone: `stopIn` stops
 * what still runs there, then they are deleted. A folder without an owner file is left alone
 * unless it holds one of the suite's servers (another tool's folder of the same prefix).
 */
export function removeStaleFolders(prefix: string, stopIn: (root: string) => void): void {
  let names: string[];
  try {
    names = readdirSync(tmpdir()).filter((n) => n.startsWith(prefix));
  } catch {
    return;
  }
  for (const name of names) {
    const root = path.join(tmpdir(), name);
    let owner = NaN;
    try {
      owner = Number(readFileSync(path.join(root, "owner.pid"), "utf8"));
      process.kill(owner, 0);
      continue; // its run is still going
    } catch {
      // no owner file, or its owner is gone
    }
    if (Number.isNaN(owner) && !holdsServers(root)) continue;
    stopIn(root);
    try {
      rmSync(root, { recursive: true, force: true });
    } catch {
      // not ours to delete (another user's)
    }
  }
}

/** Whether `root` holds a server folder of the suite's (postgres, rabbitmq, a cluster's node-<n>). */
function holdsServers(root: string): boolean {
  try {
    return readdirSync(root).some((f) => f === "postgres" || f === "rabbitmq" || /^node-\d+$/.test(f));
  } catch {
    return false;
  }
}
