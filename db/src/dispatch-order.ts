import { createRequire } from "node:module";
import { CompiledQuery } from "kysely";
import pg from "pg";
import type { Db } from "./database.ts";
import type { Pick } from "./fair-share.ts";
import { planFrom, previewInputs, readInputs, topUpInputs } from "./dispatch-inputs.ts";
import { claimStatement, inTopUp, nextUnitsStatement } from "./dispatch-units.ts";
import { run, type Statement } from "./prepared.ts";

/**
 * The next units in dispatch order: what GET /next shows. The order itself is fair-share.ts;
 * the statements are dispatch-inputs.ts and dispatch-units.ts, shared with the top-up
 * (top-up.ts), which claims exactly these units. Two statements, whose cost depends on the
 * number of groups and on k, never on the backlog: the inputs (the candidate groups, their
 * shares and units in flight), then the first units of each chosen group and priority (the
 * units_ready index).
 */
export interface BacklogEntry {
  id: number;
  kind: string;
  group: string;
  priority: number;
  attempt: number;
  createdAt: Date;
}

export async function nextInLine(db: Db, limit: number): Promise<BacklogEntry[]> {
  const inputs = await readInputs(db, previewInputs(limit, { allLevels: false }));
  return unitsFor(db, await planFrom(db, inputs));
}

/** The units the picks stand for, in pick order. */
async function unitsFor(db: Db, picks: readonly Pick[]): Promise<BacklogEntry[]> {
  if (picks.length === 0) return [];
  const rows = await run(db, nextUnitsStatement(picks));
  return rows.map((r) => ({ id: r.id, kind: r.kind, group: r.group_name, priority: r.priority, attempt: r.attempt, createdAt: r.created_at }));
}

/** pg's text form of a parameter (arrays, dates, JSON), as it sends them. */
const { prepareValue } = createRequire(import.meta.url)("pg/lib/utils") as { prepareValue(value: unknown): unknown };

/** A parameter as an SQL literal: EXPLAIN takes no bound parameters. */
function literal(value: unknown): string {
  const text = prepareValue(value);
  return text === null ? "NULL" : pg.escapeLiteral(String(text));
}

/**
 * The plans PostgreSQL runs (EXPLAIN ANALYZE), line by line, for the benchmark and the tests:
 * a preview of `limit`, and a top-up with room for `limit` more than are outstanding. Each
 * statement is explained as the services run it, prepared and with the generic plan
 * PostgreSQL keeps for it (a plan for known parameter values can differ: it knows how many
 * picks an array holds). Everything runs in one top-up transaction that is rolled back:
 * nothing is dispatched, no retry released.
 */
export async function explainDispatch(db: Db, limit: number): Promise<string[]> {
  const lines: string[] = [];
  const explain = async (trx: Db, title: string, statement: Statement<unknown>) => {
    const q = statement.query.compile(trx);
    const args = q.parameters.length ? `(${q.parameters.map(literal).join(", ")})` : "";
    await trx.executeQuery(CompiledQuery.raw(`PREPARE rtb_explained AS ${q.sql}`));
    const { rows } = await trx.executeQuery<{ "QUERY PLAN": string }>(CompiledQuery.raw(`EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE rtb_explained${args}`));
    await trx.executeQuery(CompiledQuery.raw("DEALLOCATE rtb_explained"));
    lines.push(title, ...rows.map((r) => `  ${r["QUERY PLAN"]}`));
  };
  const rollback = new Error("explained; roll back");
  await inTopUp(db, async (trx) => {
    await trx.executeQuery(CompiledQuery.raw("SET LOCAL plan_cache_mode = force_generic_plan"));
    const preview = await planFrom(trx, await readInputs(trx, previewInputs(limit, { allLevels: false })));
    await explain(trx, `GET /next?limit=${limit}, 1. the inputs: the candidate groups, their shares and units in flight`, previewInputs(limit, { allLevels: false }));
    await explain(trx, `GET /next?limit=${limit}, 2. the units the picks stand for`, nextUnitsStatement(preview));
    const { outstanding } = await readInputs(trx, topUpInputs(0));
    await explain(trx, `top-up of ${limit}, 1. the inputs: switch, outstanding, candidate groups`, topUpInputs(outstanding + limit));
    const picks = await planFrom(trx, await readInputs(trx, topUpInputs(outstanding + limit)));
    await explain(trx, `top-up of ${limit}, 2. the claim: units, UPDATE, ready counts, events, groups served`, claimStatement(picks, new Date()));
    throw rollback;
  }).catch((err: unknown) => {
    if (err !== rollback) throw err;
  });
  return lines;
}
