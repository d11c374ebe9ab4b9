import { sql } from "kysely";
import { CANCELLABLE, IN_FLIGHT, isInFlight, type CancellableStatus, type UnitStatus } from "@rtb/protocol";
import type { Db } from "./database.ts";
import { lockTopUps } from "./dispatch-units.ts";
import type { UnitRow } from "./schema.ts";
import { statusList } from "./status-sql.ts";
import { findUnit, OPERATOR, toUnit, type Unit } from "./units.ts";

/**
 * Cancelling units (docs/architecture.md, "Cancelling"): in any status that is not terminal.
 * The row becomes `cancelled` and the timeline gets a `cancelled` event for the unit's current
 * attempt, from the operator, saying from which status and who asked (`by`: what the audit
 * log says of the caller). A cancel from dispatched, queued or processing ends that attempt:
 * the checker counts it as the attempt's terminal event (invariants.ts), and the status rules
 * ignore every later report of it (`cancelled`, status-transitions.ts). What was in flight is
 * returned, for the api to announce to the agents once this has committed.
 *
 * The triggers of migrations 0004/0005 keep the tallies: a ready pending unit that is
 * cancelled leaves the ready counts through its delta, as any writer's change but the
 * top-up's does (only the top-up sets rtb.ready_counted).
 */

/** Who cancelled: the caller as the audit log describes it (services/api/src/http/audit.ts). */
export type CancelledBy = Record<string, string | boolean>;

/** An attempt cancelled while dispatched, queued or processing: its job may still reach an agent. */
export interface CancelledAttempt {
  unitId: number;
  attempt: number;
  from: (typeof IN_FLIGHT)[number];
}

export type CancelOutcome =
  | { outcome: "done"; unit: Unit; from: CancellableStatus; inFlight: CancelledAttempt | null }
  | { outcome: "not_found" }
  | { outcome: "conflict"; unit: Unit };

const CANCEL_SET = sql`status = 'cancelled', not_before = NULL, agent_wait_since = NULL, updated_at = now()`;
const event = (by: CancelledBy, action: string) =>
  sql`jsonb_build_object('action', ${action}::text, 'from', before_status, 'by', ${JSON.stringify(by)}::jsonb)`;

/**
 * POST /units/:id/cancel, in one statement. The row lock orders it against a report being
 * applied (apply-status.ts locks the same row): whichever commits first wins, and the other
 * sees its result (a success already recorded is a 409 here; a cancel already recorded makes
 * the success an ignored report). Against the top-up, which re-checks `status = 'pending'`
 * under the same lock, a pending unit is either dispatched or cancelled, never both.
 */
export async function cancelUnit(db: Db, id: number, by: CancelledBy = {}): Promise<CancelOutcome> {
  const { rows } = await sql<UnitRow & { before_status: CancellableStatus }>`
    WITH before AS (SELECT id, status FROM units WHERE id = ${id} FOR UPDATE),
    changed AS (
      UPDATE units u SET ${CANCEL_SET}
      FROM before b
      WHERE u.id = b.id AND b.status IN ${statusList(CANCELLABLE)}
      RETURNING u.*, b.status AS before_status
    ),
    logged AS (
      INSERT INTO unit_events (unit_id, attempt, status, at, source, detail)
      SELECT id, attempt, 'cancelled', now(), ${OPERATOR}, ${event(by, "cancel")} FROM changed
    )
    SELECT * FROM changed`.execute(db);
  const row = rows[0];
  if (row) {
    const { before_status: from, ...unit } = row;
    return { outcome: "done", unit: toUnit(unit), from, inFlight: isInFlight(from) ? { unitId: unit.id, attempt: unit.attempt, from } : null };
  }
  const current = await findUnit(db, id);
  return current ? { outcome: "conflict", unit: current } : { outcome: "not_found" };
}

export interface CancelFilter {
  kind?: string | undefined;
  group?: string | undefined;
  /** Default: every cancellable status. */
  statuses?: readonly CancellableStatus[] | undefined;
  /** Only the steps of this workflow (POST /workflows/:id/cancel). */
  workflowId?: number | undefined;
}

/** Units per batch of a bulk cancel: one short transaction each. */
export const CANCEL_BATCH = 1_000;

/**
 * POST /units/cancel: every unit matching the filter, that exists when this starts, is
 * cancelled, in batches of `batchSize` (each its own short transaction, so no lock is held
 * for long whatever the number of units); `onBatch` gets each batch's in-flight attempts
 * after it committed (the api announces them before the next batch). Returns the totals.
 *
 * Each batch takes the top-up lock first (dispatch-units.ts): the top-up's claim locks pending
 * rows in its own order, and two transactions locking the same rows in different orders can
 * deadlock; a batch locks its rows in id order, as apply-status.ts does, and waits for a
 * top-up in progress (milliseconds) rather than racing it. A batch that still fails on a
 * deadlock or serialization failure with someone else is run again.
 */
export async function cancelMatching(
  db: Db,
  f: CancelFilter,
  by: CancelledBy,
  opts: { batchSize?: number; onBatch?: (inFlight: CancelledAttempt[]) => Promise<void> } = {},
): Promise<{ cancelled: number; inFlight: number }> {
  const batchSize = opts.batchSize ?? CANCEL_BATCH;
  const statuses: readonly UnitStatus[] = f.statuses?.length ? f.statuses : CANCELLABLE;
  // Units enqueued after the request arrived are not the request's to cancel.
  const top = await db.selectFrom("units").select((eb) => eb.fn.max("id").as("id")).executeTakeFirst();
  const upTo = Number(top?.id ?? 0);
  const totals = { cancelled: 0, inFlight: 0 };
  let after = 0;
  for (let idle = 0; after < upTo && idle < 3; ) {
    const batch = await retryingConflicts(() =>
      db.transaction().execute(async (trx) => {
        await lockTopUps(trx);
        const { rows } = await sql<{ id: number; attempt: number; before_status: CancellableStatus }>`
          WITH picked AS (
            SELECT id, status FROM units
            WHERE id > ${after} AND id <= ${upTo} AND status = ANY(${sql.val(statuses)}::text[])
              ${f.kind !== undefined ? sql`AND kind = ${f.kind}` : sql``}
              ${f.group !== undefined ? sql`AND group_name = ${f.group}` : sql``}
              ${f.workflowId !== undefined ? sql`AND workflow_id = ${f.workflowId}` : sql``}
            ORDER BY id
            LIMIT ${batchSize}
            FOR UPDATE
          ),
          changed AS (
            UPDATE units u SET ${CANCEL_SET}
            FROM picked p
            -- The ids again as an array, so the planner probes the primary key instead of hashing the table.
            WHERE u.id = p.id AND u.id = ANY(ARRAY(SELECT id FROM picked))
            RETURNING u.id, u.attempt, p.status AS before_status
          ),
          logged AS (
            INSERT INTO unit_events (unit_id, attempt, status, at, source, detail)
            SELECT id, attempt, 'cancelled', now(), ${OPERATOR}, ${event(by, "cancel_matching")} FROM changed
          )
          SELECT id, attempt, before_status FROM changed ORDER BY id`.execute(trx);
        return rows;
      }),
    );
    if (batch.length === 0) {
      // A locked row that changed while this batch waited for it is left out of the batch
      // (FOR UPDATE re-checks the filter), so an empty batch does not prove the end: look.
      const more = await db
        .selectFrom("units")
        .select("id")
        .where("id", ">", after)
        .where("id", "<=", upTo)
        .where("status", "in", [...statuses])
        .$if(f.kind !== undefined, (q) => q.where("kind", "=", f.kind!))
        .$if(f.group !== undefined, (q) => q.where("group_name", "=", f.group!))
        .$if(f.workflowId !== undefined, (q) => q.where("workflow_id", "=", f.workflowId!))
        .orderBy("id")
        .limit(1)
        .executeTakeFirst();
      if (!more) break;
      idle++;
      continue;
    }
    idle = 0;
    after = Number(batch[batch.length - 1]!.id);
    const inFlight = batch.flatMap((r) => (isInFlight(r.before_status) ? [{ unitId: Number(r.id), attempt: r.attempt, from: r.before_status }] : []));
    totals.cancelled += batch.length;
    totals.inFlight += inFlight.length;
    if (inFlight.length > 0) await opts.onBatch?.(inFlight);
  }
  return totals;
}

/** Run `fn` again (up to 3 times) when it failed on a deadlock or a serialization failure. */
async function retryingConflicts<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (attempt >= 3 || (code !== "40P01" && code !== "40001")) throw err;
      await new Promise((r) => setTimeout(r, 20 * attempt));
    }
  }
}
