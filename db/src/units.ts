import type { Db } from "./database.ts";
import type { UnitStatus } from "./schema.ts";
import { countByStatus } from "./invariants.ts";

export interface UnitEvent {
  attempt: number;
  status: string;
  at: Date;
  recordedAt: Date;
  source: string;
  detail: unknown;
}

export interface Unit {
  id: number;
  kind: string;
  group: string;
  priority: number;
  payload: unknown;
  ref: string | null;
  status: UnitStatus;
  attempt: number;
  maxAttempts: number;
  notBefore: Date | null;
  dispatchedAt: Date | null;
  result: unknown;
  lastError: string | null;
  createdAt: Date;
  updatedAt: Date;
}

export async function getUnit(db: Db, id: number): Promise<(Unit & { events: UnitEvent[] }) | null> {
  const row = await db.selectFrom("units").selectAll().where("id", "=", id).executeTakeFirst();
  if (!row) return null;
  const events = await db
    .selectFrom("unit_events")
    .select(["attempt", "status", "at", "recorded_at", "source", "detail"])
    .where("unit_id", "=", id)
    .orderBy("id")
    .execute();
  return {
    id: row.id,
    kind: row.kind,
    group: row.group_name,
    priority: row.priority,
    payload: row.payload,
    ref: row.ref,
    status: row.status,
    attempt: row.attempt,
    maxAttempts: row.max_attempts,
    notBefore: row.not_before,
    dispatchedAt: row.dispatched_at,
    result: row.result,
    lastError: row.last_error,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    events: events.map((e) => ({ attempt: e.attempt, status: e.status, at: e.at, recordedAt: e.recorded_at, source: e.source, detail: e.detail })),
  };
}

export interface Summary {
  counts: Record<UnitStatus, number>;
  total: number;
  /** dispatched + queued */
  outstanding: number;
  dispatching: boolean;
  dispatchingSince: Date | null;
  leader: { id: string; activeSince: Date | null; utilization: unknown; reportedAt: Date } | null;
}

/** Counts per status and the shared control state. (A full count: fine for a backlog of thousands.) */
export async function summarize(db: Db): Promise<Summary> {
  const [counts, control] = await Promise.all([countByStatus(db), db.selectFrom("control").selectAll().executeTakeFirstOrThrow()]);
  return {
    counts,
    total: Object.values(counts).reduce((sum, n) => sum + n, 0),
    outstanding: counts.dispatched + counts.queued,
    dispatching: control.dispatching,
    dispatchingSince: control.dispatching_changed_at,
    leader:
      control.leader_id && control.leader_reported_at
        ? { id: control.leader_id, activeSince: control.leader_since, utilization: control.leader_utilization, reportedAt: control.leader_reported_at }
        : null,
  };
}
