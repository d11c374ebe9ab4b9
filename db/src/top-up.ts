import { sql } from "kysely";
import type { Db } from "./database.ts";
import { planFrom, readInputs, topUpInputs } from "./dispatch-inputs.ts";
import { claimStatement, inTopUp } from "./dispatch-units.ts";
import { run } from "./prepared.ts";

export interface ClaimedUnit {
  unitId: number;
  attempt: number;
  kind: string;
  payload: unknown;
  /** Its dependencies' results by step name (workflows.ts): absent for a unit without dependencies. */
  deps?: Record<string, unknown>;
  /** The trace its dispatch continues (units.traceparent): absent for a unit without one. */
  traceparent?: string;
}

/** A claimed row as the dispatcher publishes it. */
/**
 * Store the traces that dispatch started for units stored without one (enqueued while tracing
 * was off, or seeded), so their later attempts join the same trace; a unit that has one keeps it.
 */
export async function keepTraceparents(db: Db, started: readonly { unitId: number; traceparent: string }[]): Promise<void> {
  await sql`
    UPDATE units AS u SET traceparent = c.tp
    FROM unnest(${sql.val(started.map((s) => s.unitId))}::bigint[], ${sql.val(started.map((s) => s.traceparent))}::text[]) AS c(id, tp)
    WHERE u.id = c.id AND u.traceparent IS NULL`.execute(db);
}

export const toClaimedUnit = (r: { id: number; attempt: number; kind: string; payload: unknown; deps: Record<string, unknown> | null; traceparent: string | null }): ClaimedUnit => {
  const unit: ClaimedUnit = { unitId: r.id, attempt: r.attempt, kind: r.kind, payload: r.payload };
  if (r.deps !== null) unit.deps = r.deps;
  if (r.traceparent !== null) unit.traceparent = r.traceparent;
  return unit;
};

export interface TopUpClaim {
  dispatching: boolean;
  /** dispatched + queued before this claim */
  outstanding: number;
  units: ClaimedUnit[];
}

/**
 * Claim the units that fill the outbox up to `maxQueue`, in one transaction of three
 * statements and a commit (dispatch-units.ts, `inTopUp`):
 *
 * - Begin and take a transaction-scoped advisory lock, which serialises top-ups across api
 *   replicas, so two of them can never both see the same free room and over-dispatch. It is
 *   released at commit.
 * - The inputs (dispatch-inputs.ts): the switch, outstanding (dispatched + queued) counted under
 *   the lock (every path that makes a unit outstanding goes through here, so the count cannot
 *   grow behind our back), and with room, the candidate groups.
 * - The plan (fair-share.ts), exactly as GET /next previews it, then one claim statement,
 *   which also takes the units out of the ready counts.
 *
 * The caller publishes the returned units only after this has committed.
 */
export async function claimTopUp(db: Db, maxQueue: number): Promise<TopUpClaim> {
  return inTopUp(db, async (trx) => {
    const inputs = await readInputs(trx, topUpInputs(maxQueue));
    const { dispatching, outstanding } = inputs;
    if (!dispatching || inputs.free <= 0) return { dispatching, outstanding, units: [] };
    const picks = await planFrom(trx, inputs);
    if (picks.length === 0) return { dispatching, outstanding, units: [] };
    const rows = await run(trx, claimStatement(picks, new Date()));
    return { dispatching, outstanding, units: rows.map(toClaimedUnit) };
  });
}

/** When the earliest retry backoff ends, so the dispatcher can wake then. */
export async function nextRetryAt(db: Db): Promise<Date | null> {
  const row = await db
    .selectFrom("units")
    .select((eb) => eb.fn.min("not_before").as("at"))
    .where("status", "=", "pending")
    .where("not_before", "is not", null)
    .where("not_before", ">", sql<Date>`now()`)
    // Units waiting for an agent ('infinity') wait for its heartbeat, not for a clock.
    .where("not_before", "<", sql<Date>`'infinity'`)
    .executeTakeFirst();
  return (row?.at as Date | null | undefined) ?? null;
}
