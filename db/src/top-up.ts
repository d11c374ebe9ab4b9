import { sql } from "kysely";
import type { Db } from "./database.ts";
import { insertEvents } from "./apply-status.ts";
import { markGroupsServed, nextInLine } from "./dispatch-order.ts";
import { outstandingNow } from "./invariants.ts";

/** Any constant will do; it only has to be the same in every api replica. */
const TOP_UP_LOCK = 0x727462_01;

export interface ClaimedUnit {
  unitId: number;
  attempt: number;
  kind: string;
  payload: unknown;
}

export interface TopUpClaim {
  dispatching: boolean;
  /** dispatched + queued before this claim */
  outstanding: number;
  units: ClaimedUnit[];
}

/**
 * Claim the units that fill the outbox up to `maxQueue`, in one transaction:
 *
 * - A transaction-scoped advisory lock serialises top-ups across api replicas, so two of
 *   them can never both see the same free room and over-dispatch. It is released at commit.
 * - Outstanding (dispatched + queued) is counted under that lock; every path that makes a
 *   unit outstanding goes through here, so the count cannot grow behind our back.
 * - The units are chosen by nextInLine, exactly as GET /next previews them (dispatch-order.ts,
 *   fair-share.ts), then moved to `dispatched` with a new attempt. `status = 'pending'` in
 *   the UPDATE re-checks each row under its row lock, so a unit cancelled meanwhile is
 *   skipped, never dispatched.
 *
 * The caller publishes the returned units only after this has committed.
 */
export async function claimTopUp(db: Db, maxQueue: number): Promise<TopUpClaim> {
  return db.transaction().execute(async (trx) => {
    await sql`SELECT pg_advisory_xact_lock(${TOP_UP_LOCK})`.execute(trx);
    const control = await trx.selectFrom("control").select("dispatching").executeTakeFirstOrThrow();
    const outstanding = await outstandingNow(trx);
    const free = maxQueue - outstanding;
    if (!control.dispatching || free <= 0) return { dispatching: control.dispatching, outstanding, units: [] };

    const next = await nextInLine(trx, free);
    if (next.length === 0) return { dispatching: true, outstanding, units: [] };
    const ids = next.map((u) => u.id);

    const rows = await trx
      .updateTable("units")
      .set({ status: "dispatched", attempt: sql`attempt + 1`, dispatched_at: sql`now()`, not_before: null, updated_at: sql`now()` })
      .where("id", "=", sql<number>`ANY(${sql.val(ids)}::bigint[])`)
      .where("status", "=", "pending")
      .returning(["id", "attempt", "kind", "payload"])
      .execute();
    const byId = new Map(rows.map((r) => [r.id, r]));
    const taken = next.filter((u) => byId.has(u.id));
    const units = taken.map((u) => {
      const r = byId.get(u.id)!;
      return { unitId: r.id, attempt: r.attempt, kind: r.kind, payload: r.payload };
    });
    await markGroupsServed(trx, taken.map((u) => u.group));
    const now = new Date();
    await insertEvents(
      trx,
      units.map((u) => ({ unitId: u.unitId, attempt: u.attempt, eventStatus: "dispatched", at: now, source: "api", detail: null })),
    );
    return { dispatching: true, outstanding, units };
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
    .executeTakeFirst();
  return (row?.at as Date | null | undefined) ?? null;
}
