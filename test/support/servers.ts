import { execFileSync } from "node:child_process";
import { createConnection, createServer } from "node:net";
import { inject } from "vitest";
import type { OwnedPostgres, OwnedRabbit } from "./owned-servers.ts";

/**
 * Where the tests find PostgreSQL and RabbitMQ, in this order:
 * 1. environment variables (RTB_TEST_DB_HOST, RTB_TEST_DB_USER, RTB_TEST_DB_PASSWORD,
 *    RTB_TEST_BROKER_HOST, RTB_TEST_BROKER_USER, RTB_TEST_BROKER_PASSWORD, RTB_TEST_BROKER_VHOST);
 * 2. localhost on the default ports;
 * 3. containers started with testcontainers, where a Docker engine answers.
 * With none of these, the run stops with a message saying what to start.
 * The tests that stop a server (test/disruptive) never use these: their project runs on
 * servers of its own (owned-servers.ts, started by global-setup.ts).
 * `origin` says which, for the tests that restart a server (server-control.ts).
 */
export interface Servers {
  db: { host: string; port: number; user: string; password: string };
  broker: { host: string; port: number; user: string; password: string; vhost: string };
  origin: { db: ServerOrigin | OwnedPostgres; broker: ServerOrigin | OwnedRabbit };
  stop(): Promise<void>;
}

/** Where a shared server came from: an RTB_TEST_* variable, this machine's default port, or a container started for the run. */
export type ServerOrigin = { kind: "env"; variable: string } | { kind: "localhost" } | { kind: "container"; containerId: string };

/**
 * The run's servers, in a test file. Throws when this project's servers could not be
 * started (the disruptive project, without PostgreSQL's or RabbitMQ's tools), with the reason.
 */
export function testServers() {
  const s = inject("rtbServers");
  if (s.unavailable) throw new Error(s.unavailable);
  return s;
}

/**
 * The run's servers as the RTB_DB_* and RTB_BROKER_* variables a script takes (bench, chaos):
 * the script makes its own database and broker names on them.
 */
export function serversEnv(): Record<string, string> {
  const s = testServers();
  return {
    RTB_DB_HOST: `${s.db.host}:${s.db.port}`,
    RTB_DB_USER: s.db.user,
    RTB_DB_PASSWORD: s.db.password,
    RTB_BROKER_HOST: `${s.broker.host}:${s.broker.port}`,
    RTB_BROKER_USER: s.broker.user,
    RTB_BROKER_PASSWORD: s.broker.password,
    RTB_BROKER_VHOST: s.broker.vhost,
  };
}

function splitHost(value: string, defaultPort: number) {
  const [host, port] = value.split(":");
  return { host: host || "localhost", port: port ? Number(port) : defaultPort };
}

export function reachable(host: string, port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

/** A free TCP port on this machine (for a container's fixed host port, which survives a container restart). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Whether a Docker engine answers here (testcontainers' fallback needs one). */
export function dockerAvailable(): boolean {
  try {
    execFileSync("docker", ["info"], { stdio: "ignore", timeout: 5_000 });
    return true;
  } catch {
    return false;
  }
}

export async function findServers(env = process.env): Promise<Servers> {
  const db = { ...splitHost(env.RTB_TEST_DB_HOST ?? "localhost:5432", 5432), user: env.RTB_TEST_DB_USER ?? "postgres", password: env.RTB_TEST_DB_PASSWORD ?? "" };
  const broker = {
    ...splitHost(env.RTB_TEST_BROKER_HOST ?? "localhost:5672", 5672),
    user: env.RTB_TEST_BROKER_USER ?? "guest",
    password: env.RTB_TEST_BROKER_PASSWORD ?? "guest",
    vhost: env.RTB_TEST_BROKER_VHOST ?? "/",
  };
  const origin: Servers["origin"] = {
    db: env.RTB_TEST_DB_HOST ? { kind: "env", variable: "RTB_TEST_DB_HOST" } : { kind: "localhost" },
    broker: env.RTB_TEST_BROKER_HOST ? { kind: "env", variable: "RTB_TEST_BROKER_HOST" } : { kind: "localhost" },
  };
  const [dbUp, brokerUp] = await Promise.all([reachable(db.host, db.port), reachable(broker.host, broker.port)]);
  if (dbUp && brokerUp) return { db, broker, origin, stop: async () => {} };

  if (!dockerAvailable()) {
    const missing = [
      dbUp ? null : `PostgreSQL at ${db.host}:${db.port} (set RTB_TEST_DB_HOST)`,
      brokerUp ? null : `RabbitMQ at ${broker.host}:${broker.port} (set RTB_TEST_BROKER_HOST)`,
    ].filter(Boolean);
    throw new Error(
      `The tests need a real PostgreSQL and RabbitMQ. Not reachable: ${missing.join("; ")}, and no Docker engine for testcontainers.\n` +
        "Start them (for example `docker compose up -d postgres rabbit`, or the local services), or point the RTB_TEST_* variables at running ones.",
    );
  }
  // Docker is there: start whatever is missing, and stop it after the run. The host ports are
  // fixed (not Docker's random ones) so that a container restarted by a test keeps its port.
  const { GenericContainer, Wait } = await import("testcontainers");
  const started: { stop(): Promise<unknown> }[] = [];
  if (!dbUp) {
    const c = await new GenericContainer("postgres:17")
      .withEnvironment({ POSTGRES_HOST_AUTH_METHOD: "trust" })
      .withExposedPorts({ container: 5432, host: await freePort() })
      .withWaitStrategy(Wait.forLogMessage(/database system is ready to accept connections/, 2))
      .start();
    started.push(c);
    Object.assign(db, { host: c.getHost(), port: c.getMappedPort(5432), user: "postgres", password: "" });
    origin.db = { kind: "container", containerId: c.getId() };
  }
  if (!brokerUp) {
    const c = await new GenericContainer("rabbitmq:4")
      .withExposedPorts({ container: 5672, host: await freePort() })
      .withWaitStrategy(Wait.forLogMessage(/Server startup complete/))
      .start();
    started.push(c);
    Object.assign(broker, { host: c.getHost(), port: c.getMappedPort(5672), user: "guest", password: "guest", vhost: "/" });
    origin.broker = { kind: "container", containerId: c.getId() };
  }
  return { db, broker, origin, stop: async () => void (await Promise.all(started.map((c) => c.stop()))) };
}

/**
 * A Redis for the bench's BullMQ peer (test/system/bench-peers.test.ts), found as the other
 * servers are: RTB_TEST_REDIS_URL, else localhost:6379, else a container where Docker answers.
 */
export async function testRedis(env: NodeJS.ProcessEnv = process.env): Promise<{ url: string; stop(): Promise<void> }> {
  const url = env.RTB_TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
  const { hostname, port } = new URL(url);
  if (await reachable(hostname, Number(port || 6379))) return { url, stop: async () => {} };
  if (!dockerAvailable()) {
    throw new Error(`The peer benchmark's test needs a Redis: none at ${url} (set RTB_TEST_REDIS_URL), and no Docker engine for testcontainers. Start one (redis-server), or point RTB_TEST_REDIS_URL at a running one.`);
  }
  const { GenericContainer, Wait } = await import("testcontainers");
  const c = await new GenericContainer("redis:7").withExposedPorts(6379).withWaitStrategy(Wait.forLogMessage(/Ready to accept connections/)).start();
  return { url: `redis://${c.getHost()}:${c.getMappedPort(6379)}`, stop: async () => void (await c.stop()) };
}
