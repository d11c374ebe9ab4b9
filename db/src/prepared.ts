import type { RawBuilder } from "kysely";
import type { Db } from "./database.ts";

/** A statement with a name of its own: see `run`. */
export interface Statement<R> {
  name: string;
  query: RawBuilder<R>;
}

export function statement<R>(name: string, query: RawBuilder<R>): Statement<R> {
  return { name, query };
}

/**
 * Run a statement as a named (prepared) one: pg parses it once per connection and PostgreSQL
 * keeps its plan, instead of parsing, rewriting and planning these long CTEs on every call
 * (about 1 ms of the 2 to 4 each takes; docs/architecture.md). The SQL text of a name never
 * changes: everything that varies is a parameter.
 *
 * Kysely has no option for it, but hands `sql` to pg's client.query() as it is, and pg takes a
 * { name, text } config there: so `sql` is that config (a plain object: pg copies it property
 * by property, which for a String object would mean one per character). Its toString() is the
 * text, for whatever else prints `sql` (a query log). db/test/top-up.test.ts checks that the
 * statements are prepared.
 *
 * With RTB_DB_PREPARED_STATEMENTS=false (behind PgBouncer in transaction mode) the pool's
 * client drops the name (database.ts, UnnamedStatementsClient): the same text goes out as an
 * unnamed statement, parsed and planned on every call.
 */
export async function run<R>(db: Db, s: Statement<R>): Promise<R[]> {
  const q = s.query.compile(db);
  const text = q.sql;
  const named = { name: s.name, text, toString: () => text };
  const { rows } = await db.executeQuery<R>({ ...q, sql: named as unknown as string });
  return rows;
}
