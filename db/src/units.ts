import type { Db } from "./database.ts";
import { sql } from "kysely";
import type { UnitStatus, Utilization } from "@rtb/protocol";
import type { UnitRow } from "./schema.ts";
import { isStuck } from "./invariants.ts";
import { backlogColumns, toBacklogShape, type BacklogColumns, type BacklogShape } from "./tallies.ts";
import { zeroCounts } from "@rtb/protocol";
import { unitCallbacks, type CallbackDelivery } from "./callbacks.ts";

export interface UnitEvent {
  attempt: number;
  status: UnitStatus;
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
  /** Times the reconciler re-published the current attempt without it moving on. */
  republishes: number;
  /** Pending, waiting since then for an agent of its kind (none consumed it when it was dispatched). */
  waitingForAgentSince: Date | null;
  /** The schedule and occurrence that made it; null for a producer's unit. */
  schedule: { name: string; occurrence: Date } | null;
  /** The workflow it is a step of, and its name there; null outside workflows. */
  workflow: { id: number; step: string } | null;
  /** Blocked: dependencies not yet satisfied; null for a unit that never had dependencies. */
  waitingOn: number | null;
  /** Where its end is POSTed (migration 0013); null: its group's, if it has one. */
  callbackUrl: string | null;
  /** The trace id of its traceparent (migration 0012); null: none. */
  traceId: string | null;
  createdAt: Date;
  updatedAt: Date;
}

/** One unit without its timeline; null when there is none with this id. */
export async function findUnit(db: Db, id: number): Promise<Unit | null> {
  const row = await db.selectFrom("units").selectAll().where("id", "=", id).executeTakeFirst();
  return row ? toUnit(row) : null;
}

export async function getUnit(db: Db, id: number): Promise<(Unit & { events: UnitEvent[]; callbacks: CallbackDelivery[] }) | null> {
  const unit = await findUnit(db, id);
  if (!unit) return null;
  const events = await db
    .selectFrom("unit_events")
    .select(["attempt", "status", "at", "recorded_at", "source", "detail"])
    .where("unit_id", "=", id)
    .orderBy("id")
    .execute();
  return {
    ...unit,
    events: events.map((e) => ({ attempt: e.attempt, status: e.status, at: e.at, recordedAt: e.recorded_at, source: e.source, detail: e.detail })),
    callbacks: await unitCallbacks(db, id),
  };
}

export function toUnit(row: UnitRow): Unit {
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
    // A unit waiting for an agent is not ready until one comes ('infinity'): no time to show.
    notBefore: row.not_before instanceof Date && Number.isFinite(row.not_before.getTime()) ? row.not_before : null,
    dispatchedAt: row.dispatched_at,
    result: row.result,
    lastError: row.last_error,
    republishes: row.republished_attempt === row.attempt ? row.republishes : 0,
    waitingForAgentSince: row.agent_wait_since,
    schedule: row.schedule_name !== null && row.scheduled_for !== null ? { name: row.schedule_name, occurrence: row.scheduled_for } : null,
    workflow: row.workflow_id !== null && row.step !== null ? { id: row.workflow_id, step: row.step } : null,
    waitingOn: row.waiting_on,
    callbackUrl: row.callback_url,
    traceId: row.traceparent === null ? null : row.traceparent.slice(3, 35),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

export interface NewUnit {
  kind: string;
  group: string;
  priority: number;
  payload: unknown;
  /** The producer's idempotency key; null for none. */
  ref: string | null;
  maxAttempts: number;
  /** Not ready before this time (a time past means now), or this many ms from the database's now. */
  runAt?: Date | null;
  delayMs?: number | null;
  /** A schedule's unit: which schedule and occurrence made it (its ref names the same). */
  schedule?: { name: string; occurrence: Date } | null;
  /** A workflow's step: its workflow and name there (workflows.ts). */
  workflow?: { id: number; step: string } | null;
  /**
   * It will get this many dependencies (addDependencies, in the same transaction, counts them):
   * it starts `blocked`, waiting for them. 0 or absent: none, it starts pending.
   */
  dependencies?: number;
  /** The trace its dispatches continue (a W3C traceparent, migration 0012); absent: none. */
  traceparent?: string | null;
  /** Where its end is POSTed (checked by the api against RTB_WEBHOOK_ALLOWED_HOSTS); null: its group's. */
  callbackUrl?: string | null;
}

export interface Enqueued {
  id: number;
  ref: string | null;
  status: UnitStatus;
  /** false: a unit with this ref already existed, and this is it (nothing was written). */
  created: boolean;
}

/**
 * Insert units in one statement (one round trip however many), in the given order so that
 * ids, and with them first-in-first-out within a group, follow it. A `ref` that already
 * exists is not inserted again: its entry is the existing unit, with `created: false`. The
 * same ref twice in one call is one unit. Results are in input order.
 *
 * Ids are drawn from the sequence in the input CTE, so each input row knows its id before
 * the insert, and the rows that ON CONFLICT skipped are the ones missing from RETURNING.
 */
export async function enqueueUnits(db: Db, units: readonly NewUnit[]): Promise<Enqueued[]> {
  if (units.length === 0) return [];
  // The same ref twice in one call: the later entries are the first one's unit.
  const firstWithRef = new Map<string, number>();
  const distinct: NewUnit[] = [];
  const slot: number[] = units.map((u) => {
    if (u.ref !== null) {
      const seen = firstWithRef.get(u.ref);
      if (seen !== undefined) return seen;
      firstWithRef.set(u.ref, distinct.length);
    }
    distinct.push(u);
    return distinct.length - 1;
  });

  const run = (distinct: readonly NewUnit[]) =>
    sql<{ ord: string; id: number | null; status: UnitStatus | null; created: boolean }>`
      WITH input AS (
        SELECT t.*, nextval(pg_get_serial_sequence('units', 'id')) AS id
        FROM unnest(
          ${sql.val(distinct.map((u) => u.kind))}::text[],
          ${sql.val(distinct.map((u) => u.group))}::text[],
          ${sql.val(distinct.map((u) => u.priority))}::int[],
          ${sql.val(distinct.map((u) => JSON.stringify(u.payload === undefined ? {} : u.payload)))}::jsonb[],
          ${sql.val(distinct.map((u) => u.ref))}::text[],
          ${sql.val(distinct.map((u) => u.maxAttempts))}::int[],
          ${sql.val(distinct.map((u) => u.runAt ?? null))}::timestamptz[],
          ${sql.val(distinct.map((u) => u.delayMs ?? null))}::bigint[],
          ${sql.val(distinct.map((u) => u.schedule?.name ?? null))}::text[],
          ${sql.val(distinct.map((u) => u.schedule?.occurrence ?? null))}::timestamptz[],
          ${sql.val(distinct.map((u) => u.workflow?.id ?? null))}::bigint[],
          ${sql.val(distinct.map((u) => u.workflow?.step ?? null))}::text[],
          ${sql.val(distinct.map((u) => (u.dependencies ? u.dependencies : 0)))}::int[],
          ${sql.val(distinct.map((u) => u.callbackUrl ?? null))}::text[],
          ${sql.val(distinct.map((u) => u.traceparent ?? null))}::text[]
        ) WITH ORDINALITY AS t (kind, group_name, priority, payload, ref, max_attempts, run_at, delay_ms, schedule_name, scheduled_for, workflow_id, step, deps, callback_url, traceparent, ord)
      ),
      -- A delayed unit is pending with not_before set: not ready (the ready counts leave it
      -- out) until the top-up or the preview clears it once due (dispatch-inputs.ts), and the
      -- dispatcher's timer wakes at the earliest not_before (nextRetryAt).
      due AS (
        SELECT input.*, CASE WHEN run_at > now() THEN run_at
                             WHEN delay_ms > 0 THEN now() + delay_ms * interval '1 millisecond' END AS not_before
        FROM input
      ),
      inserted AS (
        INSERT INTO units (id, kind, group_name, priority, payload, ref, max_attempts, not_before, schedule_name, scheduled_for, workflow_id, step, callback_url, traceparent, waiting_on, status)
        OVERRIDING SYSTEM VALUE
        -- A unit with dependencies waits, blocked, for addDependencies to count its edges.
        SELECT id, kind, group_name, priority, payload, ref, max_attempts, not_before, schedule_name, scheduled_for, workflow_id, step, callback_url, traceparent,
               CASE WHEN deps > 0 THEN 0 END, CASE WHEN deps > 0 THEN 'blocked' ELSE 'pending' END
        FROM due ORDER BY ord
        ON CONFLICT (ref) DO NOTHING
        RETURNING id, status, not_before, schedule_name, scheduled_for
      ),
      -- The timeline says when a delayed unit is due, and which schedule's occurrence made one.
      due_events AS (
        INSERT INTO unit_events (unit_id, attempt, status, at, source, detail)
        SELECT id, 0, status, now(), 'api',
               jsonb_strip_nulls(jsonb_build_object('due', not_before, 'schedule', schedule_name, 'occurrence', scheduled_for))
        FROM inserted WHERE not_before IS NOT NULL OR schedule_name IS NOT NULL
      )
      SELECT i.ord, COALESCE(n.id, u.id) AS id, COALESCE(n.status, u.status) AS status,
             n.id IS NOT NULL AS created
      FROM input i
      LEFT JOIN inserted n ON n.id = i.id
      LEFT JOIN units u ON n.id IS NULL AND u.ref = i.ref
      ORDER BY i.ord`.execute(db);

  const { rows } = await run(distinct);
  // A ref inserted by a concurrent transaction that committed after this statement began: it
  // was skipped, but this statement's snapshot cannot see it. Run again for those entries
  // only (now they are visible): running the whole input again would insert its ref-less
  // units a second time.
  const missing = rows.flatMap((r, i) => (r.id === null ? [i] : []));
  if (missing.length > 0) {
    const again = (await run(missing.map((i) => distinct[i]!))).rows;
    missing.forEach((i, j) => (rows[i] = again[j]!));
  }
  const results = rows.map((r, i): Enqueued => {
    if (r.id === null) throw new Error(`unit with ref ${distinct[i]!.ref} was neither inserted nor found`);
    return { id: Number(r.id), ref: distinct[i]!.ref, status: r.status!, created: r.created };
  });
  // A repeated entry is not a second creation: only the first entry of a unit says created.
  const answered = new Set<number>();
  return slot.map((s) => {
    const first = !answered.has(s);
    answered.add(s);
    return first ? results[s]! : { ...results[s]!, created: false };
  });
}

export interface UnitFilter {
  statuses?: readonly UnitStatus[];
  kind?: string;
  group?: string;
  /** Exactly this ref (unique: at most one unit). */
  ref?: string;
  /** Pending units waiting for nothing (ready), a clock (a due time) or an agent of their kind. */
  waiting?: "nothing" | "clock" | "agent";
  /** Only the units this schedule made (index units_by_schedule). */
  schedule?: string;
  /** Only units in flight for longer than their timeout (the reconciler's business). */
  stuck?: { dispatchTimeoutMs: number; processingTimeoutMs: number };
  /** Keyset pagination: units with an id below this one. */
  beforeId?: number;
  limit: number;
}

/** The pending units waiting for `what`: the same three sets as BacklogShape (tallies.ts). */
function waitingFor(what: "nothing" | "clock" | "agent") {
  switch (what) {
    case "nothing":
      return sql<boolean>`status = 'pending' AND not_before IS NULL`;
    case "clock":
      return sql<boolean>`status = 'pending' AND not_before IS NOT NULL AND not_before < 'infinity'`;
    case "agent":
      return sql<boolean>`status = 'pending' AND not_before = 'infinity'`;
  }
}

/** Units newest first, filtered; `nextBeforeId` continues the listing (null: no more). */
export async function listUnits(db: Db, f: UnitFilter): Promise<{ units: Unit[]; nextBeforeId: number | null }> {
  let q = db.selectFrom("units").selectAll();
  if (f.statuses?.length) q = q.where("status", "in", [...f.statuses]);
  if (f.kind !== undefined) q = q.where("kind", "=", f.kind);
  if (f.group !== undefined) q = q.where("group_name", "=", f.group);
  if (f.ref !== undefined) q = q.where("ref", "=", f.ref);
  if (f.waiting !== undefined) q = q.where(waitingFor(f.waiting));
  if (f.schedule !== undefined) q = q.where("schedule_name", "=", f.schedule);
  if (f.stuck) q = q.where(isStuck({ ...f.stuck, graceMs: 0 }));
  if (f.beforeId !== undefined) q = q.where("id", "<", f.beforeId);
  const rows = await q.orderBy("id", "desc").limit(f.limit + 1).execute();
  const more = rows.length > f.limit;
  const page = more ? rows.slice(0, f.limit) : rows;
  return { units: page.map(toUnit), nextBeforeId: more ? page[page.length - 1]!.id : null };
}

/** What an operator's action on one unit came to. */
export type UnitAction = { outcome: "done"; unit: Unit } | { outcome: "not_found" } | { outcome: "conflict"; unit: Unit };

/** The source of operator actions in a unit's timeline. */
export const OPERATOR = "operator";

/**
 * Change one unit's status if it is in one of `from`, and record the action in its timeline
 * (event status `to`, the unit's current attempt), in one statement. The row lock taken by
 * the UPDATE orders this against a concurrent top-up, which re-checks `status = 'pending'`.
 * (Cancelling has its own statement: cancel.ts.)
 */
async function actOnUnit(db: Db, id: number, from: readonly UnitStatus[], action: string): Promise<UnitAction> {
  return db.transaction().execute(async (trx) => {
    const { rows } = await sql<UnitRow>`
      WITH before AS (SELECT id, status FROM units WHERE id = ${id} FOR UPDATE),
      changed AS (
        UPDATE units u SET ${RETRY_SET}
        FROM before b
        WHERE u.id = b.id AND b.status = ANY(${sql.val(from)}::text[])
        RETURNING u.*, b.status AS before_status
      ),
      logged AS (
        INSERT INTO unit_events (unit_id, attempt, status, at, source, detail)
        SELECT id, attempt, status, now(), ${OPERATOR}, jsonb_build_object('action', ${action}::text, 'from', before_status) FROM changed
      )
      SELECT * FROM changed`.execute(trx);
    if (rows[0]) {
      // A step back to blocked whose dependency failed meanwhile is closed again (migration 0010).
      if (rows[0].status === "blocked") await sql`SELECT rtb_reclose(ARRAY[${id}]::bigint[])`.execute(trx);
      return { outcome: "done", unit: (await findUnit(trx, id))! };
    }
    const current = await findUnit(trx, id);
    return current ? { outcome: "conflict", unit: current } : { outcome: "not_found" };
  });
}

/**
 * Back to the backlog: eligible at once, with at least one attempt left (a unit that used up
 * its attempts gets one more). The next dispatch is a new attempt. A unit with dependencies
 * not all satisfied (a step cancelled while blocked, or closed by a failed dependency) goes
 * back to `blocked` instead, to wait for them (waiting_on counts them in every status).
 */
const RETRY_SET = sql`status = CASE WHEN u.waiting_on > 0 THEN 'blocked' ELSE 'pending' END, closed_by = NULL,
  not_before = NULL, agent_wait_since = NULL, max_attempts = GREATEST(u.max_attempts, u.attempt + 1), updated_at = now()`;

/** The statuses an operator may retry from. */
export const RETRYABLE_STATUSES: readonly UnitStatus[] = ["error", "cancelled"];

/** POST /units/:id/retry: an errored or cancelled unit goes back to the backlog. */
export const retryUnit = (db: Db, id: number) => actOnUnit(db, id, RETRYABLE_STATUSES, "retry");

/** POST /units/redrive: every errored unit (of a kind, of a group) back to the backlog, in one statement. */
export async function redriveErrors(db: Db, f: { kind?: string; group?: string } = {}): Promise<number> {
  return db.transaction().execute(async (trx) => {
    const { rows } = await sql<{ n: number; blocked: number[] | null }>`
      WITH changed AS (
        UPDATE units u SET ${RETRY_SET}
        WHERE status = 'error'
          ${f.kind !== undefined ? sql`AND kind = ${f.kind}` : sql``}
          ${f.group !== undefined ? sql`AND group_name = ${f.group}` : sql``}
        RETURNING id, attempt, status
      ),
      logged AS (
        INSERT INTO unit_events (unit_id, attempt, status, at, source, detail)
        SELECT id, attempt, status, now(), ${OPERATOR}, '{"action":"redrive","from":"error"}'::jsonb FROM changed
      )
      SELECT count(*)::int AS n, array_agg(id) FILTER (WHERE status = 'blocked') AS blocked FROM changed`.execute(trx);
    const blocked = rows[0]?.blocked ?? [];
    if (blocked.length > 0) await sql`SELECT rtb_reclose(${sql.val(blocked)}::bigint[])`.execute(trx);
    return rows[0]?.n ?? 0;
  });
}

export interface Summary {
  counts: Record<UnitStatus, number>;
  total: number;
  /** dispatched + queued */
  outstanding: number;
  /** The pending units by what they wait for. */
  backlog: BacklogShape;
  dispatching: boolean;
  dispatchingSince: Date | null;
  /** utilization: as the inbox stored it from a validated status message (or null: none came with the report). */
  leader: { id: string; activeSince: Date | null; utilization: Utilization | null; reportedAt: Date } | null;
  /** What retention pruned in all (migration 0009), read with the counts: total + pruned is every unit ever enqueued. */
  retention: { pruned: { units: number; events: number }; lastRunAt: Date | null; lastRunBy: string | null };
  /** Workflows with a step not finished (index workflows_by_status). */
  workflowsRunning: number;
}

/** Counts per status (from the tallies: exact, and cheap at any size) and the shared control state. */
export async function summarize(db: Db): Promise<Summary> {
  // One statement, so one snapshot: a prune or a top-up committing meanwhile is seen in every
  // figure or in none (the counts, the backlog's shape and the pruned totals add up).
  const { rows } = await sql<
    BacklogColumns & {
      counts: Record<string, number>;
      dispatching: boolean;
      dispatching_changed_at: Date | null;
      leader_id: string | null;
      leader_utilization: unknown;
      leader_reported_at: Date | null;
      leader_since: Date | null;
      pruned_units: number;
      pruned_events: number;
      last_run_at: Date | null;
      last_run_by: string | null;
      workflows_running: number;
    }
  >`
    SELECT
      (SELECT coalesce(json_object_agg(status, n), '{}') FROM (SELECT status, sum(n) AS n FROM status_tallies GROUP BY status) AS t) AS counts,
      ${backlogColumns},
      c.dispatching, c.dispatching_changed_at, c.leader_id, c.leader_utilization, c.leader_reported_at, c.leader_since,
      r.pruned_units, r.pruned_events, r.last_run_at, r.last_run_by,
      (SELECT count(*)::int FROM workflows WHERE status = 'running') AS workflows_running
    FROM control c CROSS JOIN retention r`.execute(db);
  const row = rows[0]!;
  const counts = zeroCounts();
  for (const [status, n] of Object.entries(row.counts)) if (status in counts) counts[status as UnitStatus] = Number(n);
  return {
    counts,
    total: Object.values(counts).reduce((sum, n) => sum + n, 0),
    outstanding: counts.dispatched + counts.queued,
    backlog: toBacklogShape(row),
    dispatching: row.dispatching,
    dispatchingSince: row.dispatching_changed_at,
    leader:
      row.leader_id && row.leader_reported_at
        ? { id: row.leader_id, activeSince: row.leader_since, utilization: row.leader_utilization as Utilization | null, reportedAt: row.leader_reported_at }
        : null,
    retention: { pruned: { units: Number(row.pruned_units), events: Number(row.pruned_events) }, lastRunAt: row.last_run_at, lastRunBy: row.last_run_by },
    workflowsRunning: row.workflows_running,
  };
}
