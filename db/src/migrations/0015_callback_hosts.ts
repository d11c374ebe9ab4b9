import { sql, type Kysely } from "kysely";

/**
 * Completion callbacks: each delivery's host, for the per-host cap of the delivery loop
 * (RTB_WEBHOOK_HOST_CONCURRENCY, claimCallbacks in callbacks.ts), so a slow receiver with a
 * backlog cannot hold every request slot while other receivers wait.
 *
 * `host` is the URL's authority, lower-cased (`host` or `host:port`), computed by PostgreSQL
 * as the row is written: a generated column, so the trigger of 0013/0014 is unchanged. The api
 * stores callback URLs as the WHATWG URL parser writes them (what fetch sends: a default port
 * dropped, `%2E` decoded, numeric IPv4 as dotted quads), so for those it is `new URL(url).host`
 * exactly; a URL without an authority keys as ''. Adding the column rewrites the table once.
 * The index lets a claim find the hosts with pending deliveries (a skip scan) and take each
 * one's oldest due rows, never walking the backlog of a host at its cap.
 */
const HOST_OF_URL = sql`coalesce(lower(substring(url from '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?([^/?#]*)')), '')`;

export async function up(db: Kysely<any>): Promise<void> {
  await sql`ALTER TABLE callbacks ADD COLUMN host text GENERATED ALWAYS AS (${HOST_OF_URL}) STORED`.execute(db);
  await sql`CREATE INDEX callbacks_pending_by_host ON callbacks (host, next_at) WHERE state = 'pending'`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP INDEX callbacks_pending_by_host`.execute(db);
  await sql`ALTER TABLE callbacks DROP COLUMN host`.execute(db);
}
