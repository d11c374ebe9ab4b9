import { Kysely, PostgresDialect, sql } from "kysely";
import pg from "pg";
import type { Logger } from "@rtb/runtime";
import { retryUntil } from "@rtb/runtime";
import type { DbConfig } from "./db-config.ts";
import type { Database } from "./schema.ts";

// bigint ids and counts come back as strings by default; every id and count of ours fits
// in a double (2^53), so parse them as numbers at the boundary.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

export type Db = Kysely<Database>;

export interface DbHandle {
  db: Db;
  pool: pg.Pool;
  /** `host:port (RTB_DB_HOST)`, for messages. */
  label: string;
  /**
   * Statements sent to PostgreSQL through `db` so far, failed ones and BEGIN/COMMIT included
   * (the api exports it as rtb_db_statements_total; the benchmark divides it by units).
   */
  readonly statements: number;
  close(): Promise<void>;
}

export function connectionOptions(c: DbConfig, database = c.RTB_DB_NAME): pg.PoolConfig {
  return { host: c.RTB_DB_HOST.host, port: c.RTB_DB_HOST.port, user: c.RTB_DB_USER, password: c.RTB_DB_PASSWORD, database };
}

/**
 * A pg client that sends every statement unnamed: the name `run` gives a dispatch statement
 * (prepared.ts) is dropped, so PostgreSQL parses and plans it on each call and nothing is left
 * on the server connection. For RTB_DB_PREPARED_STATEMENTS=false: behind PgBouncer in
 * transaction mode (before 1.21, or without max_prepared_statements), each transaction may run
 * on another server connection, where a name pg prepared elsewhere is unknown ("prepared
 * statement ... does not exist") or one a neighbour prepared is taken ("... already exists").
 */
class UnnamedStatementsClient extends pg.Client {
  // pg's query() has many overloads; only a config object can carry a name.
  override query(...args: unknown[]): any {
    const [config, ...rest] = args;
    if (typeof config === "object" && config !== null && "name" in config) {
      const { name: _, ...unnamed } = config as { name: unknown };
      return (super.query as (...a: unknown[]) => unknown)(unnamed, ...rest);
    }
    return (super.query as (...a: unknown[]) => unknown)(...args);
  }
}

export function createDb(c: DbConfig, logger: Logger): DbHandle {
  const pool = new pg.Pool({
    ...connectionOptions(c),
    max: c.RTB_DB_POOL_SIZE,
    connectionTimeoutMillis: 5_000,
    ...(c.RTB_DB_PREPARED_STATEMENTS ? {} : { Client: UnnamedStatementsClient }),
  });
  // A client that loses its server (a restart, a failover) emits 'error': an idle one on the
  // pool, a checked-out one (mid-transaction) on itself, where pg-pool has no listener then.
  // Without these the process would crash; the query in progress fails and is retried.
  pool.on("error", (err) => logger.warn({ err: err.message }, "idle database connection lost"));
  pool.on("connect", (client) => client.on("error", (err) => logger.warn({ err: err.message }, "database connection lost")));
  let statements = 0;
  // kysely calls `log` once per statement it runs, transaction control included; counting
  // there costs an increment and keeps db/ free of any metrics library.
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }), log: () => void statements++ });
  return {
    db,
    pool,
    label: `${c.RTB_DB_HOST.host}:${c.RTB_DB_HOST.port}/${c.RTB_DB_NAME}`,
    get statements() {
      return statements;
    },
    close: () => db.destroy(),
  };
}

const INVALID_CATALOG_NAME = "3D000";

/**
 * Wait until PostgreSQL answers, with backoff, naming the host and the variable to fix.
 * A missing database is created (the quick start runs against a stock server).
 */
export async function waitForDatabase(
  handle: DbHandle,
  c: DbConfig,
  logger: Logger,
  opts: { deadlineMs: number; signal?: AbortSignal },
): Promise<void> {
  await retryUntil(
    async () => {
      try {
        await sql`SELECT 1`.execute(handle.db);
      } catch (err) {
        if ((err as { code?: string }).code !== INVALID_CATALOG_NAME) throw err;
        await createDatabase(c, logger);
        await sql`SELECT 1`.execute(handle.db);
      }
    },
    {
      ...opts,
      onRetry: (err, attempt, delayMs) =>
        logger.warn(
          { db: handle.label, variable: "RTB_DB_HOST", err: (err as Error).message, attempt, retryInMs: delayMs },
          "cannot reach PostgreSQL; retrying",
        ),
    },
  ).catch((err: unknown) => {
    throw new Error(
      `cannot reach PostgreSQL at ${handle.label} (check RTB_DB_HOST, RTB_DB_USER, RTB_DB_PASSWORD, RTB_DB_NAME): ${(err as Error).message}`,
      { cause: err },
    );
  });
}

async function createDatabase(c: DbConfig, logger: Logger): Promise<void> {
  const client = new pg.Client(connectionOptions(c, "postgres"));
  await client.connect();
  try {
    await client.query(`CREATE DATABASE ${pg.escapeIdentifier(c.RTB_DB_NAME)}`);
    logger.info({ database: c.RTB_DB_NAME }, "created the database");
  } catch (err) {
    // Another replica created it first.
    if ((err as { code?: string }).code !== "42P04") throw err;
  } finally {
    await client.end();
  }
}

/** true when PostgreSQL answers a trivial query. */
export async function ping(db: Db): Promise<boolean> {
  return sql`SELECT 1`
    .execute(db)
    .then(() => true)
    .catch(() => false);
}

/**
 * A data exception (SQLSTATE class 22: a NUL character, an out-of-range number, ...): the
 * statement can never succeed with these values, so retrying it is pointless.
 */
export function isDataError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && code.startsWith("22");
}

/**
 * The database cannot be reached right now (refused, reset, shutting down, starting up, a
 * connection exception): worth retrying later, and an HTTP 503 rather than a 500.
 */
export function isUnavailableError(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === "string" ? e.code : "";
  if (["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EHOSTUNREACH", "ENOTFOUND", "EPIPE"].includes(code)) return true;
  // 08: connection exception; 57P01-57P03: admin shutdown, crash shutdown, cannot connect now.
  if (code.startsWith("08") || ["57P01", "57P02", "57P03"].includes(code)) return true;
  const message = typeof e?.message === "string" ? e.message : "";
  return /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(message);
}

/**
 * Worth holding a batch for: the database is down or failing over (isUnavailableError), out
 * of resources (class 53), read-only mid-failover (25006), or the transaction lost a race
 * (40001 serialization failure, 40P01 deadlock). Anything else a statement raises says
 * something about the data it was given, and retrying the same data fails the same way.
 */
export function isOutageError(err: unknown): boolean {
  if (isUnavailableError(err)) return true;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== "string") return false;
  return code.startsWith("53") || ["25006", "40001", "40P01"].includes(code);
}
