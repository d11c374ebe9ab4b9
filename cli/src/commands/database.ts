import type { DbHandle } from "@rtb/db";
import { KIND_PATTERN, KIND_RULE } from "@rtb/protocol";
import { ConfigurationError, intArg, str, UsageError, type Command, type Context } from "../command.ts";
import { count, duration } from "../format.ts";

/**
 * The two commands that talk to PostgreSQL directly (RTB_DB_*), not to the api: migrate
 * (before any api runs) and seed (a million units in one statement, no HTTP in between).
 * Their modules are loaded only here, so the api commands start without them.
 */
async function withDatabase<T>(ctx: Context, command: string, fn: (database: DbHandle) => Promise<T>): Promise<T> {
  const [{ createDb, dbConfig, waitForDatabase }, { ConfigError, int, loadConfig }, { z }, { pino }] = await Promise.all([
    import("@rtb/db"),
    import("@rtb/runtime"),
    import("zod"),
    import("pino"),
  ]);
  let config;
  try {
    config = loadConfig(z.object({ ...dbConfig, RTB_CONNECT_TIMEOUT_MS: int(10_000, { min: 0 }) }), ctx.env);
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigurationError(err.message);
    throw err;
  }
  // The db helpers log through pino; a CLI's stdout is for its output, so their warnings
  // (a retry while PostgreSQL is unreachable) become plain lines on stderr.
  const logger = pino({ level: "warn", base: undefined, timestamp: false }, { write: (line: string) => ctx.out.note(logLine(command, line)) });
  const database = createDb({ ...config, RTB_DB_POOL_SIZE: 2 }, logger);
  try {
    await waitForDatabase(database, config, logger, { deadlineMs: config.RTB_CONNECT_TIMEOUT_MS, signal: ctx.signal });
    return await fn(database);
  } finally {
    await database.close();
  }
}

function logLine(command: string, line: string): string {
  try {
    const { msg, err, attempt, retryInMs } = JSON.parse(line) as { msg?: string; err?: string; attempt?: number; retryInMs?: number };
    const extra = [err, attempt === undefined ? null : `attempt ${attempt}`, retryInMs === undefined ? null : `next in ${duration(retryInMs)}`].filter(Boolean);
    return `rtb ${command}: ${msg ?? ""}${extra.length ? ` (${extra.join(", ")})` : ""}`;
  } catch {
    return `rtb ${command}: ${line.trim()}`;
  }
}

const DB_HELP = [
  "",
  "Talks to PostgreSQL directly, not to the api: RTB_DB_HOST (localhost:5432), RTB_DB_USER",
  "(postgres), RTB_DB_PASSWORD, RTB_DB_NAME (rtb); waits up to RTB_CONNECT_TIMEOUT_MS",
  "(10000) for the server.",
];

export const migrate: Command = {
  name: "migrate",
  summary: "bring the database schema up to date (creates the database if missing)",
  usage: "rtb migrate [--json]",
  help: ['  --json   {"database": "host:port/name", "applied": ["0001_initial", ...]}', ...DB_HELP].join("\n"),
  options: {},
  positionals: { min: 0, max: 0 },
  async run(ctx) {
    const { migrateToLatest } = await import("@rtb/db");
    const { label, applied } = await withDatabase(ctx, "migrate", async (database) => ({
      label: database.label,
      applied: (await migrateToLatest(database.db)).map((r) => r.migrationName),
    }));
    if (ctx.json) return ctx.out.json({ database: label, applied });
    ctx.out.line(applied.length ? `migrated ${label}: applied ${applied.join(", ")}` : `${label} is up to date: no migration to apply`);
  },
};

export const seed: Command = {
  name: "seed",
  summary: "add N units straight into the database (for trials and load tests)",
  usage: "rtb seed <N> [--kind K] [--groups G] [--priority P] [--max-attempts M] [--json]",
  help: [
    "  --kind K           their kind (default simulate, which the built-in agent handles)",
    "  --groups G         spread over groups customer-1 .. customer-G, round-robin (default 5)",
    "  --priority P       their priority (default 0)",
    "  --max-attempts M   attempts before a unit ends as error (default 3)",
    '  --json             {"created": N, "firstId": i, "lastId": j}',
    "",
    "Always adds N units (the api's RTB_SEED_UNITS only fills an empty backlog), in one",
    'INSERT: payload {"n": 1..N}. A running api dispatches them on its next top-up (its',
    "reconciler ticks every few seconds; `rtb go` tops up at once).",
    ...DB_HELP,
  ].join("\n"),
  options: {
    kind: { type: "string", default: "simulate" },
    groups: { type: "string", default: "5" },
    priority: { type: "string", default: "0" },
    "max-attempts": { type: "string", default: "3" },
  },
  positionals: { min: 1, max: 1 },
  async run(ctx, values, [n]) {
    const opts = {
      count: intArg(n, "<N>", { min: 1, max: 10_000_000 }),
      kind: str(values.kind)!,
      groups: intArg(values.groups, "--groups", { min: 1, max: 1_000_000 }),
      priority: intArg(values.priority, "--priority", { min: -2_147_483_648, max: 2_147_483_647 }),
      maxAttempts: intArg(values["max-attempts"], "--max-attempts", { min: 1, max: 1000 }),
    };
    if (!KIND_PATTERN.test(opts.kind)) throw new UsageError(`--kind: expected ${KIND_RULE}, got ${JSON.stringify(opts.kind)}`);
    const { seedUnits } = await import("@rtb/db");
    const started = Date.now();
    const { label, created } = await withDatabase(ctx, "seed", async (database) => ({ label: database.label, created: await seedUnits(database.db, opts) }));
    if (ctx.json) return ctx.out.json(created);
    ctx.out.line(`seeded ${count(created.created)} units into ${label} (ids ${created.firstId} to ${created.lastId}): kind ${opts.kind}, ${opts.groups} group${opts.groups === 1 ? "" : "s"}, priority ${opts.priority}, in ${duration(Date.now() - started)}`);
  },
};
