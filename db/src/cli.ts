/**
 * `npm run migrate`: bring the database named by RTB_DB_* up to date and exit. The api also
 * migrates at start; this is for deploy pipelines that migrate first.
 */
import { ConfigError, createLogger, int, loadConfig } from "@rtb/runtime";
import { z } from "zod";
import { createDb, waitForDatabase } from "./database.ts";
import { dbConfig } from "./db-config.ts";
import { migrateToLatest } from "./migrate.ts";

const command = process.argv[2];
if (command !== "migrate") {
  console.error(`usage: tsx db/src/cli.ts migrate (got ${command ?? "nothing"})`);
  process.exit(2);
}
let config;
try {
  config = loadConfig(z.object({ ...dbConfig, RTB_CONNECT_TIMEOUT_MS: int(60_000, { min: 0 }) }), process.env);
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  console.error(`rtb migrate: ${err.message}`);
  process.exit(2);
}
const logger = createLogger({ service: "migrate", level: "info", format: "auto" });
const database = createDb(config, logger);
try {
  await waitForDatabase(database, config, logger, { deadlineMs: config.RTB_CONNECT_TIMEOUT_MS });
  const results = await migrateToLatest(database.db);
  logger.info({ applied: results.map((r) => r.migrationName) }, results.length ? "migrated" : "already up to date");
} catch (err) {
  logger.fatal({ err: (err as Error).message }, "migration failed");
  process.exitCode = 1;
} finally {
  await database.close();
}
