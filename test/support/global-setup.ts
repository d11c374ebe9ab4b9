import { randomBytes } from "node:crypto";
import pg from "pg";
import type { TestProject } from "vitest/node";
import { migrateToLatest } from "@rtb/db";
import { Kysely, PostgresDialect } from "kysely";
import { findServers, type Servers } from "./servers.ts";
import { startOwnedServers } from "./owned-servers.ts";

declare module "vitest" {
  export interface ProvidedContext {
    rtbServers: {
      db: { host: string; port: number; user: string; password: string };
      broker: { host: string; port: number; user: string; password: string; vhost: string };
      /** Where each server came from (how test/disruptive restarts it: server-control.ts). */
      origin: Servers["origin"];
      /** Set when this project's servers could not be started: why (every test of it fails with it). */
      unavailable?: string;
      /** A migrated database every test file clones (CREATE DATABASE ... TEMPLATE). */
      template: string;
      /** Unique per run: prefixes every database and broker name this run creates. */
      runId: string;
    };
  }
}

/**
 * Once per project of `npm test` (vitest runs a root globalSetup for each project that has
 * files to run, before any test): find the servers, migrate a template database, clean up
 * afterwards. The `disruptive` project, whose tests stop and restart servers, gets servers of
 * its own instead (owned-servers.ts: a throwaway PostgreSQL cluster and RabbitMQ node on free
 * ports), stopped and deleted at its teardown; without their tools its tests fail, naming
 * what is missing. No connection is held between setup and teardown: test/disruptive
 * restarts the servers, and a connection of this (the main vitest) process dropped by a
 * restart would be an unhandled 'error' here.
 */
export default async function setup(project: TestProject) {
  const runId = `r${Date.now().toString(36)}${randomBytes(2).toString("hex")}`;
  let servers: Servers;
  if (project.name === "disruptive") {
    try {
      const owned = await startOwnedServers(runId);
      servers = { db: owned.db, broker: owned.broker, origin: { db: owned.postgres, broker: owned.rabbit }, stop: owned.stop };
    } catch (err) {
      const unavailable = `${(err as Error).message}. These tests never stop the servers you (or CI) run; they need servers of their own.`;
      console.error(`rtb tests (disruptive): ${unavailable}`);
      const none = { host: "127.0.0.1", port: 0, user: "", password: "" };
      project.provide("rtbServers", { db: none, broker: { ...none, vhost: "/" }, origin: { db: { kind: "localhost" }, broker: { kind: "localhost" } }, template: "", runId, unavailable });
      return async () => {};
    }
  } else {
    servers = await findServers();
  }
  const template = `rtb_${runId}_template`;
  try {
    await withAdmin(servers, (admin) => admin.query(`CREATE DATABASE ${template}`));
    const db = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ ...servers.db, database: template, max: 1 }) }) });
    await migrateToLatest(db);
    await db.destroy();
  } catch (err) {
    await servers.stop();
    throw err;
  }
  project.provide("rtbServers", { db: servers.db, broker: servers.broker, origin: servers.origin, template, runId });

  return async () => {
    // Owned servers go as a whole, with their data.
    if (servers.origin.db.kind !== "owned") {
      await withAdmin(servers, async (admin) => {
        const { rows } = await admin.query<{ datname: string }>("SELECT datname FROM pg_database WHERE datname LIKE $1", [`rtb_${runId}_%`]);
        for (const { datname } of rows) await admin.query(`DROP DATABASE IF EXISTS ${datname} WITH (FORCE)`).catch(() => {});
      }).catch(() => {});
    }
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
