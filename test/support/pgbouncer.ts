import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { postgresAnswers, removeStaleFolders } from "./owned-servers.ts";
import { dockerAvailable, reachable, testServers } from "./servers.ts";

/**
 * A PgBouncer in transaction pooling mode in front of the run's PostgreSQL, for the tests of
 * rtb behind one (test/system/pgbouncer.test.ts). Found, in this order:
 *
 * 1. RTB_TEST_PGBOUNCER_HOST (`host:port`): one already running, which must pool in transaction
 *    mode and serve every database of the test PostgreSQL (a `*` entry) to RTB_TEST_DB_USER;
 * 2. Debian's `pgbouncer` binary (`/usr/sbin/pgbouncer`, or `pgbouncer` on PATH): an instance of
 *    the test's own, on a free port of 127.0.0.1, in a folder of its own under the OS temp
 *    directory (`rtb-test-pgbouncer-*`, its ini and auth file), stopped and deleted by `stop`
 *    (a folder left by a run that was killed is cleaned up by the next one); as root it runs as
 *    the `postgres` user (or RTB_TEST_PG_RUN_AS) through runuser, since PgBouncer refuses root;
 * 3. a container (edoburu/pgbouncer, with the same ini) where a Docker engine answers.
 *
 * With none of these it throws, saying to `apt-get install pgbouncer`. An instance it starts
 * pools `DEFAULT_POOL_SIZE` server connections per database: few, so that a client's
 * transactions really run on different server connections.
 */
export interface PgBouncer {
  host: string;
  port: number;
  /** Where it came from, for messages. */
  origin: string;
  /** Stop it and delete its folder (nothing for one given by RTB_TEST_PGBOUNCER_HOST). Never throws. */
  stop(): Promise<void>;
}

/** Server connections per database and user in an instance started here. */
export const DEFAULT_POOL_SIZE = 3;

const PREFIX = "rtb-test-pgbouncer-";

export async function startPgBouncer(env = process.env): Promise<PgBouncer> {
  const s = testServers();
  if (env.RTB_TEST_PGBOUNCER_HOST) {
    const [host = "localhost", port = "6432"] = env.RTB_TEST_PGBOUNCER_HOST.split(":");
    if (!(await reachable(host, Number(port)))) throw new Error(`RTB_TEST_PGBOUNCER_HOST=${env.RTB_TEST_PGBOUNCER_HOST}: no PgBouncer answers there`);
    return { host, port: Number(port), origin: "RTB_TEST_PGBOUNCER_HOST", stop: async () => {} };
  }
  const binary = findPgBouncer();
  if (binary) return startLocal(binary, s.db);
  if (dockerAvailable()) return startContainer(s.db);
  throw new Error(
    "the PgBouncer tests need a PgBouncer: none found at /usr/sbin/pgbouncer or on PATH, RTB_TEST_PGBOUNCER_HOST is not set, and no Docker engine " +
      "for a container. Install it (apt-get install pgbouncer; its packaged service is not needed) or set RTB_TEST_PGBOUNCER_HOST.",
  );
}

type Upstream = { host: string; port: number; user: string; password: string };

function findPgBouncer(): string | undefined {
  if (existsSync("/usr/sbin/pgbouncer")) return "/usr/sbin/pgbouncer";
  try {
    return execFileSync("sh", ["-c", "command -v pgbouncer"]).toString().trim() || undefined;
  } catch {
    return undefined;
  }
}


/** A value of a libpq connection string, quoted. */
const connValue = (v: string | number) => `'${String(v).replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;

/**
 * The ini: every database of `upstream` (`*`), transaction pooling, a small pool, the user's
 * login checked against the auth file (trust when the test server has no password). No
 * ignore_startup_parameters: rtb's clients send none that PgBouncer refuses, and the tests show it.
 */
function ini(upstream: Upstream, listen: { addr: string; port: number }, files: { auth: string; log?: string; pid?: string }): string {
  return [
    "[databases]",
    `* = host=${connValue(upstream.host)} port=${upstream.port} user=${connValue(upstream.user)}${upstream.password ? ` password=${connValue(upstream.password)}` : ""}`,
    "",
    "[pgbouncer]",
    `listen_addr = ${listen.addr}`,
    `listen_port = ${listen.port}`,
    "unix_socket_dir =",
    `auth_type = ${upstream.password ? "scram-sha-256" : "trust"}`,
    `auth_file = ${files.auth}`,
    "pool_mode = transaction",
    `default_pool_size = ${DEFAULT_POOL_SIZE}`,
    "min_pool_size = 0",
    "max_client_conn = 500",
    ...(files.log ? [`logfile = ${files.log}`] : []),
    ...(files.pid ? [`pidfile = ${files.pid}`] : []),
    "",
  ].join("\n");
}

/** The auth file: the test user and its password (PgBouncer reads a plain one). */
const authFile = (u: Upstream) => `"${u.user.replace(/"/g, '""')}" "${u.password.replace(/"/g, '""')}"\n`;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

function tail(file: string): string {
  try {
    return `; the end of ${file}:\n${readFileSync(file, "utf8").slice(-2_000)}`;
  } catch {
    return "";
  }
}

async function waitForLogin(where: { host: string; port: number }, u: Upstream, what: string, exited: () => string | null, detail: () => string): Promise<void> {
  const deadline = Date.now() + 30_000;
  // Any database the upstream has will do: a login through PgBouncer opens a server connection.
  while (!(await postgresAnswers({ host: where.host, port: where.port, user: u.user, password: u.password, database: "postgres" }))) {
    const gone = exited();
    if (gone) throw new Error(`${what} exited (${gone})${detail()}`);
    if (Date.now() > deadline) throw new Error(`timed out after 30 s waiting for ${what}${detail()}`);
    await sleep(100);
  }
}

async function startLocal(binary: string, upstream: Upstream): Promise<PgBouncer> {
  removeStale();
  let runAs: string | null = null;
  if (process.getuid?.() === 0) {
    runAs = process.env.RTB_TEST_PG_RUN_AS || "postgres";
    try {
      execFileSync("id", ["-u", runAs], { stdio: "ignore" });
    } catch {
      throw new Error(`running as root, the test's PgBouncer runs as ${runAs} (PgBouncer refuses root), and there is no such user: create it or set RTB_TEST_PG_RUN_AS`);
    }
  }
  const root = mkdtempSync(path.join(tmpdir(), PREFIX));
  chmodSync(root, 0o755);
  writeFileSync(path.join(root, "owner.pid"), String(process.pid));
  const files = { auth: path.join(root, "userlist.txt"), log: path.join(root, "pgbouncer.log"), pid: path.join(root, "pgbouncer.pid") };
  const port = await freePort();
  writeFileSync(files.auth, authFile(upstream), { mode: 0o600 });
  writeFileSync(path.join(root, "pgbouncer.ini"), ini(upstream, { addr: "127.0.0.1", port }, files), { mode: 0o600 });
  if (runAs) {
    const uid = Number(execFileSync("id", ["-u", runAs]).toString());
    const gid = Number(execFileSync("id", ["-g", runAs]).toString());
    for (const f of [root, files.auth, path.join(root, "pgbouncer.ini")]) chownSync(f, uid, gid);
  }
  const args = [path.join(root, "pgbouncer.ini")];
  const child: ChildProcess = runAs ? spawn("runuser", ["-u", runAs, "--", binary, ...args], { stdio: "ignore" }) : spawn(binary, args, { stdio: "ignore" });
  let exit: string | null = null;
  const exited = new Promise<void>((resolve) =>
    child.once("exit", (code, signal) => {
      exit = signal ? `signal ${signal}` : `code ${code}`;
      resolve();
    }),
  );
  child.once("error", (err) => void (exit = err.message));
  const stop = async () => {
    if (exit === null) {
      // SIGTERM: PgBouncer's immediate shutdown (runuser passes it on).
      child.kill("SIGTERM");
      await Promise.race([exited, sleep(5_000)]);
      if (exit === null) killIfOurs(files.pid, root, "SIGKILL");
    }
    rmSync(root, { recursive: true, force: true });
  };
  try {
    await waitForLogin({ host: "127.0.0.1", port }, upstream, `the test's PgBouncer (${binary}) on 127.0.0.1:${port}`, () => exit, () => tail(files.log));
  } catch (err) {
    await stop();
    throw err;
  }
  return { host: "127.0.0.1", port, origin: binary, stop };
}

async function startContainer(upstream: Upstream): Promise<PgBouncer> {
  const { GenericContainer } = await import("testcontainers");
  // The container reaches a PostgreSQL on this machine's loopback through the Docker host.
  const local = ["localhost", "127.0.0.1", "::1"].includes(upstream.host);
  const target = local ? { ...upstream, host: "host.docker.internal" } : upstream;
  const c = await new GenericContainer("edoburu/pgbouncer:latest")
    .withExtraHosts(local ? [{ host: "host.docker.internal", ipAddress: "host-gateway" }] : [])
    .withCopyContentToContainer([
      // The image's entrypoint writes its own files only where there are none.
      { content: ini(target, { addr: "0.0.0.0", port: 6432 }, { auth: "/etc/pgbouncer/userlist.txt" }), target: "/etc/pgbouncer/pgbouncer.ini" },
      { content: authFile(target), target: "/etc/pgbouncer/userlist.txt" },
    ])
    .withExposedPorts(6432)
    .start();
  const where = { host: c.getHost(), port: c.getMappedPort(6432) };
  try {
    await waitForLogin(where, upstream, `the PgBouncer container on ${where.host}:${where.port}`, () => null, () => "");
  } catch (err) {
    await c.stop().catch(() => {});
    throw err;
  }
  return { ...where, origin: "container edoburu/pgbouncer", stop: async () => void (await c.stop().catch(() => {})) };
}

/** Signal the process of a pid file, only if its command line names `root` (a pid may have been reused since). */
function killIfOurs(pidFile: string, root: string, signal: NodeJS.Signals): void {
  try {
    const pid = Number(readFileSync(pidFile, "utf8").trim());
    const command = execFileSync("ps", ["-o", "command=", "-p", String(pid)]).toString();
    if (command.includes(root)) process.kill(pid, signal);
  } catch {
    // no pid file, or gone already
  }
}

/** Folders left by runs whose process died before stopping its PgBouncer: stop it and delete them. */
function removeStale(): void {
  removeStaleFolders(PREFIX, (root) => killIfOurs(path.join(root, "pgbouncer.pid"), root, "SIGKILL"));
}
