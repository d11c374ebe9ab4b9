import { randomBytes } from "node:crypto";
import pg from "pg";
import type { TestProject } from "vitest/node";
import { migrateToLatest } from "@rtb/db";
import { Kysely, PostgresDialect } from "kysely";
import { findServers, type Servers } from "./servers.ts";
import { ensureServerUp } from "./server-control.ts";

declare module "vitest" {
  export interface ProvidedContext {
    rtbServers: {
      db: { host: string; port: number; user: string; password: string };
      broker: { host: string; port: number; user: string; password: string; vhost: string };
      /** Where each server came from (how test/disruptive restarts it: server-control.ts). */
      origin: Servers["origin"];
      /** A migrated database every test file clones (CREATE DATABASE ... TEMPLATE). */
      template: string;
      /** Unique per run: prefixes every database and broker name this run creates. */
      runId: string;
    };
  }
}

/**
 * Once per project of `npm test` (vitest runs a root globalSetup for each project): find the
 * servers, migrate a template database, clean up afterwards. No connection is held between
 * setup and teardown: test/disruptive restarts the servers, and a connection of this (the
 * main vitest) process dropped by a restart would be an unhandled 'error' here.
 */
export default async function setup(project: TestProject) {
  const servers = await findServers();
  const runId = `r${Date.now().toString(36)}${randomBytes(2).toString("hex")}`;
  const template = `rtb_${runId}_template`;
  await withAdmin(servers, (admin) => admin.query(`CREATE DATABASE ${template}`));
  const db = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ ...servers.db, database: template, max: 1 }) }) });
  await migrateToLatest(db);
  await db.destroy();
  project.provide("rtbServers", { db: servers.db, broker: servers.broker, origin: servers.origin, template, runId });

  return async () => {
    // A test process that died mid-outage may have left a server down (server-control.ts).
    await ensureServerUp("database", servers);
    await ensureServerUp("broker", servers);
    await withAdmin(servers, async (admin) => {
      const { rows } = await admin.query<{ datname: string }>("SELECT datname FROM pg_database WHERE datname LIKE $1", [`rtb_${runId}_%`]);
      for (const { datname } of rows) await admin.query(`DROP DATABASE IF EXISTS ${datname} WITH (FORCE)`).catch(() => {});
    });
    await servers.stop();
  };
}

async function withAdmin<T>(servers: Servers, fn: (admin: pg.Client) => Promise<T>): Promise<T> {
  const admin = new pg.Client({ ...servers.db, database: "postgres" });
  admin.on("error", () => {});
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.end().catch(() => {});
  }
}
