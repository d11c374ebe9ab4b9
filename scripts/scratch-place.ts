import pg from "pg";
import { connect } from "amqplib";
import { z } from "zod";
import { connectionOptions, dbConfig } from "@rtb/db";
import { brokerConfig, brokerUrl, deleteTopology, loadConfig, topologyFromConfig } from "@rtb/runtime";

/**
 * A database and broker names of a script's own (rtb_<tag>_<id>, <tag>.<id>.) on the servers
 * RTB_DB_* and RTB_BROKER_* name, so a benchmark or a chaos run never touches the data of a
 * running rtb. `drop()` removes both.
 */
export function scratchPlace(tag: string) {
  const servers = loadConfig(z.object({ ...dbConfig, ...brokerConfig }), process.env);
  const runId = `${Date.now().toString(36)}${process.pid.toString(36)}`;
  const dbName = `rtb_${tag}_${runId}`;
  const prefix = `${tag}.${runId}.`;
  async function drop(kinds: string[] = ["simulate"]): Promise<void> {
    const admin = new pg.Client(connectionOptions({ ...servers, RTB_DB_POOL_SIZE: 1 }, "postgres"));
    await admin.connect().then(
      () => admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).finally(() => admin.end()),
      () => {},
    );
    const conn = await connect(brokerUrl(servers)).catch(() => null);
    if (conn) {
      await deleteTopology(conn, topologyFromConfig({ ...servers, RTB_BROKER_PREFIX: prefix }), kinds);
      await conn.close().catch(() => {});
    }
  }
  return { servers, runId, dbName, prefix, drop };
}

/** What scratchPlace made. */
export type ScratchPlace = ReturnType<typeof scratchPlace>;
