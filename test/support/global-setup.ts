import { randomBytes } from "node:crypto";
import pg from "pg";
import type { TestProject } from "vitest/node";
import { migrateToLatest } from "@rtb/db";
import { Kysely, PostgresDialect } from "kysely";
import { findServers } from "./servers.ts";

declare module "vitest" {
  export interface ProvidedContext {
    rtbServers: {
      db: { host: string; port: number; user: string; password: string };
      broker: { host: string; port: number; user: string; password: string; vhost: string };
      /** A migrated database every test file clones (CREATE DATABASE ... TEMPLATE). */
      template: string;
      /** Unique per run: prefixes every database and broker name this run creates. */
      runId: string;
    };
  }
}

/** Once per `npm test`: find the servers, migrate a template database, clean up afterwards. */
export default async function setup(project: TestProject) {
  const servers = await findServers();
  const runId = `r${Date.now().toString(36)}${randomBytes(2).toString("hex")}`;
  const template = `rtb_${runId}_template`;
  const admin = new pg.Client({ ...servers.db, database: "postgres" });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${template}`);
  const db = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ ...servers.db, database: template, max: 1 }) }) });
  await migrateToLatest(db);
  await db.destroy();
  project.provide("rtbServers", { db: servers.db, broker: servers.broker, template, runId });

  return async () => {
    const { rows } = await admin.query<{ datname: string }>("SELECT datname FROM pg_database WHERE datname LIKE $1", [`rtb_${runId}_%`]);
    for (const { datname } of rows) await admin.query(`DROP DATABASE IF EXISTS ${datname} WITH (FORCE)`).catch(() => {});
    await admin.end();
    await servers.stop();
  };
}
