import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, afterEach, beforeAll, beforeEach } from "vitest";
import { connect, type Channel, type ChannelModel } from "amqplib";
import { createDb, type DbConfig, type DbHandle } from "@rtb/db";
import { testServers } from "./servers.ts";
import { parseMessage, StatusMessage, type StatusUpdate } from "@rtb/protocol";
import { z } from "zod";
import { assertTopology, brokerConfig, connectBrokerFromConfig, createLogger, createTopology, deleteTopology, loadConfig, type Broker, type Logger, type Topology } from "@rtb/runtime";

/**
 * Per-test-file isolation: a database cloned from the run's migrated template, and broker
 * names under a prefix of its own (RTB_BROKER_PREFIX), so files run in parallel and runs on
 * one server never see each other's data.
 */
const servers = testServers;

export const testLogger = (service = "test"): Logger =>
  createLogger({ service, level: (process.env.RTB_TEST_LOG_LEVEL as "silent" | undefined) ?? "silent", format: "json" });

/** A JSON logger that keeps every line it writes, parsed, in `lines`: for tests of what is logged. */
export function capturingLogger(service: string, level: "info" | "debug" = "debug"): { logger: Logger; lines: Record<string, any>[] } {
  const lines: Record<string, any>[] = [];
  const logger = createLogger({ service, level, format: "json", destination: { write: (line: string) => void lines.push(JSON.parse(line)) } });
  return { logger, lines };
}

let counter = 0;
const uniqueSuffix = () => `${process.pid}_${++counter}_${randomBytes(2).toString("hex")}`;

/** Environment variables that point a service at this file's database and broker names. */
export interface TestPlace {
  env: Record<string, string>;
  dbName: string;
  prefix: string;
  topology: Topology;
}

export type QueueType = Topology["queueType"];

/**
 * The queue type test files run on: RTB_BROKER_QUEUE_TYPE's default, unless RTB_TEST_QUEUE_TYPE
 * names another (`RTB_TEST_QUEUE_TYPE=classic npm test` runs the suite on classic queues).
 */
export function defaultQueueType(): QueueType {
  const parsed = brokerConfig.RTB_BROKER_QUEUE_TYPE.safeParse(process.env.RTB_TEST_QUEUE_TYPE || undefined);
  if (!parsed.success) throw new Error(`RTB_TEST_QUEUE_TYPE: expected classic or quorum, got ${JSON.stringify(process.env.RTB_TEST_QUEUE_TYPE)}`);
  return parsed.data;
}

/**
 * A place of its own; `queueType` for the tests whose behaviour differs by type. Test files
 * take theirs from `useTestPlace`; this and `destroyTestPlace` are for a test that makes an
 * extra place of its own (and destroys it itself).
 */
export async function createTestPlace(opts: { queueType?: QueueType } = {}): Promise<TestPlace> {
  const queueType = opts.queueType ?? defaultQueueType();
  const s = servers();
  const suffix = uniqueSuffix();
  const dbName = `rtb_${s.runId}_${suffix}`;
  const admin = new pg.Client({ ...s.db, database: "postgres" });
  await admin.connect();
  try {
    // Cloning needs the template to have no other session; concurrent clones can collide, so retry.
    for (let i = 0; ; i++) {
      try {
        await admin.query(`CREATE DATABASE ${dbName} TEMPLATE ${s.template}`);
        break;
      } catch (err) {
        if (i >= 20 || (err as { code?: string }).code !== "55006") throw err;
        await new Promise((r) => setTimeout(r, 100 + Math.random() * 200));
      }
    }
  } finally {
    await admin.end();
  }
  const prefix = `${s.runId}.${suffix}.`;
  return {
    dbName,
    prefix,
    topology: createTopology({ prefix, box: "outbox", queueType, deliveryLimit: 20 }),
    env: {
      RTB_DB_HOST: `${s.db.host}:${s.db.port}`,
      RTB_DB_USER: s.db.user,
      RTB_DB_PASSWORD: s.db.password,
      RTB_DB_NAME: dbName,
      RTB_BROKER_HOST: `${s.broker.host}:${s.broker.port}`,
      RTB_BROKER_USER: s.broker.user,
      RTB_BROKER_PASSWORD: s.broker.password,
      RTB_BROKER_VHOST: s.broker.vhost,
      RTB_BROKER_PREFIX: prefix,
      // Explicit, so an RTB_BROKER_QUEUE_TYPE in the shell cannot make services disagree with `topology`.
      RTB_BROKER_QUEUE_TYPE: queueType,
      RTB_CONNECT_TIMEOUT_MS: "10000",
      RTB_LOG_LEVEL: process.env.RTB_TEST_LOG_LEVEL ?? "warn",
      RTB_LOG_FORMAT: "json",
    },
  };
}

/**
 * Drop the file's database and delete its queues and exchanges: the job queues of `kinds` and
 * of the built-in kinds, which every agent started with the built-in handlers declares (left
 * behind, each would be a quorum queue, a Raft group, kept by the broker for good).
 */
export async function destroyTestPlace(place: TestPlace, kinds: string[] = []): Promise<void> {
  const s = servers();
  const conn = await rawBroker();
  await deleteTopology(conn, place.topology, [...new Set([...kinds, "simulate", "noop"])]);
  await conn.close();
  const admin = new pg.Client({ ...s.db, database: "postgres" });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${place.dbName} WITH (FORCE)`);
  await admin.end();
}

/** What a test starts on its place: stopped (or closed) before the place is destroyed. */
export type Owned = { stop(): unknown } | { close(): unknown };

/**
 * The place of a file (or of each test), read through getters: it exists only between the
 * hooks `useTestPlace` registers, and reading it outside them throws instead of reading a
 * place that is gone.
 */
export interface LiveTestPlace extends TestPlace {
  /**
   * Tear `resource` down with the place: owned resources are stopped last-owned first, then
   * the place is destroyed, whether the tests passed, failed or never ran.
   */
  own<T extends Owned>(resource: T): T;
}

export interface TestPlaceOptions {
  queueType?: QueueType;
  /** Kinds whose job queues the tests declare, deleted with the place (the built-in kinds always are). */
  kinds?: string[];
  /** A fresh place for each test (beforeEach/afterEach) instead of one for the file or describe block. */
  perTest?: boolean;
}

/**
 * A test place for the file (or the describe block it is called in): created before its
 * tests, and after them everything `own`ed stopped and the place destroyed. Register it
 * before the hooks that use it: vitest runs before-hooks in order and after-hooks in reverse,
 * so a file's own after-hooks run while the place still exists.
 */
export function useTestPlace(opts: TestPlaceOptions = {}): LiveTestPlace {
  let place: TestPlace | undefined;
  const owned: Owned[] = [];
  const current = (): TestPlace => {
    if (!place) throw new Error("the test place exists only inside its tests and hooks");
    return place;
  };
  (opts.perTest ? beforeEach : beforeAll)(async () => {
    place = await createTestPlace(opts);
  });
  (opts.perTest ? afterEach : afterAll)(async () => {
    const errors: unknown[] = [];
    for (const r of owned.splice(0).reverse()) {
      try {
        await ("stop" in r ? r.stop() : r.close());
      } catch (err) {
        errors.push(err);
      }
    }
    if (place) {
      const gone = place;
      place = undefined;
      await destroyTestPlace(gone, opts.kinds).catch((err: unknown) => errors.push(err));
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, "tearing down the test place");
  });
  return {
    get env() {
      return current().env;
    },
    get dbName() {
      return current().dbName;
    },
    get prefix() {
      return current().prefix;
    },
    get topology() {
      return current().topology;
    },
    own(resource) {
      owned.push(resource);
      return resource;
    },
  };
}

/**
 * A database handle on the file's database (for assertions and direct store calls); `config`
 * overrides the test server's settings (another host, such as a PgBouncer in front of it).
 */
export function openTestDb(place: TestPlace, config: Partial<DbConfig> = {}): DbHandle {
  const s = servers();
  return createDb(
    {
      RTB_DB_HOST: { host: s.db.host, port: s.db.port },
      RTB_DB_USER: s.db.user,
      RTB_DB_PASSWORD: s.db.password,
      RTB_DB_NAME: place.dbName,
      RTB_DB_POOL_SIZE: 5,
      RTB_DB_PREPARED_STATEMENTS: true,
      ...config,
    },
    testLogger("db"),
  );
}

/** rtb's own broker connection (runtime's Broker) on the place's names, owned by the place. */
export async function openTestBroker(place: LiveTestPlace, logger: Logger = testLogger("broker")): Promise<Broker> {
  return place.own(await connectBrokerFromConfig(loadConfig(z.object(brokerConfig), place.env), logger));
}

/** A plain amqplib connection, for tests that publish or inspect raw messages. */
export async function rawBroker(): Promise<ChannelModel> {
  const b = servers().broker;
  return connect(`amqp://${encodeURIComponent(b.user)}:${encodeURIComponent(b.password)}@${b.host}:${b.port}/${encodeURIComponent(b.vhost)}`);
}

/**
 * A raw connection and channel, owned by the place, with the place's topology declared: for
 * tests that publish, take or count messages themselves.
 */
export async function rawChannel(place: LiveTestPlace): Promise<{ conn: ChannelModel; ch: Channel }> {
  const conn = place.own(await rawBroker());
  const ch = await conn.createChannel();
  await assertTopology(ch, place.topology);
  return { conn, ch };
}

/**
 * Take every status message waiting in `queue` (the inbox, in place of the api) and add
 * their updates to `into`, which holds all read so far; returns it.
 */
export async function drainStatusReports(ch: Channel, queue: string, into: StatusUpdate[]): Promise<StatusUpdate[]> {
  for (let m = await ch.get(queue, { noAck: true }); m; m = await ch.get(queue, { noAck: true })) {
    const parsed = parseMessage(StatusMessage, m.content);
    if (parsed.ok) into.push(...parsed.value.updates);
  }
  return into;
}

/** Ready messages in a queue (0 when it does not exist). */
export async function queueDepth(conn: ChannelModel, queue: string): Promise<number> {
  const ch: Channel = await conn.createChannel();
  ch.on("error", () => {});
  try {
    return (await ch.checkQueue(queue)).messageCount;
  } catch {
    return 0;
  } finally {
    await ch.close().catch(() => {});
  }
}

/** Poll `fn` until it returns a truthy value, or fail with `what` after `timeoutMs`. */
export async function waitFor<T>(what: string, fn: () => Promise<T> | T, timeoutMs = 30_000, everyMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
