import { sql } from "kysely";
import type { Db } from "./database.ts";
import { implausibleHeartbeat } from "./instances.ts";
import { releaseWaitingUnits } from "./agent-wait.ts";
import type { Utilization } from "@rtb/protocol";
import { planTransitions, type IgnoreReason, type ReportedUpdate, type UnitState } from "./status-transitions.ts";
import { spawnProblem, spawnSteps } from "./workflows.ts";

export interface ApplyOptions {
  retryBaseMs: number;
  retryMaxMs: number;
  /** The leader's latest view of the job tracker, stored with the batch. */
  leader?: { id: string; utilization: Utilization; at: Date; firstAt?: Date };
  /** Senders of the batch's messages (heartbeats included), recorded as seen now. */
  instances?: readonly ServiceInstanceReport[];
  /** Kinds agents announced in their heartbeats: units waiting for an agent of these kinds are released. */
  agentKinds?: readonly string[];
  /** RTB_MAX_ATTEMPTS: the attempts of spawned steps that do not say. */
  maxAttempts?: number | undefined;
}

export interface ServiceInstanceReport {
  service: "api" | "leader" | "agent";
  id: string;
  startedAt: Date;
  deadLettered: number;
}

export interface ApplyResult {
  applied: number;
  ignored: Partial<Record<IgnoreReason, number>>;
  /** Units that left dispatched/queued: the dispatcher has room again. */
  freed: number;
  /** Units sent back to the backlog to be retried after their backoff. */
  retries: number;
  /** Units that waited for an agent of their kind and are ready again (agentKinds). */
  released: number;
  /**
   * Units with dependents that finished, and fan-outs written: dependents may have become
   * ready in this transaction (the trigger of migration 0010), so a top-up is due.
   */
  settledDependents: number;
  /** Attempts that ended in this batch: how long each took from dispatch to its end. */
  finished: { kind: string; status: "success" | "error"; seconds: number }[];
  /** Heartbeats whose claims were refused (instances.ts, implausibleHeartbeat). */
  refusedHeartbeats: RefusedHeartbeat[];
  /** Cancelled attempts reported queued or processing: the cancel is to be announced again (status-transitions.ts). */
  cancelledRunning: { unitId: number; attempt: number }[];
}

export interface RefusedHeartbeat {
  service: ServiceInstanceReport["service"];
  id: string;
  reason: string;
}

/**
 * Apply a batch of status reports in one transaction: lock the units concerned (in id order,
 * so concurrent batches from several api replicas cannot deadlock), decide with the pure
 * rules in status-transitions.ts, then write every row change and every event with one
 * statement each. Three round trips per batch, whatever its size.
 */
export async function applyStatusUpdates(db: Db, updates: readonly ReportedUpdate[], opts: ApplyOptions): Promise<ApplyResult> {
  return db.transaction().execute(async (trx) => {
    const ids = [...new Set(updates.map((u) => u.unitId))].sort((a, b) => a - b);
    const rows = ids.length
      ? await trx
          .selectFrom("units")
          .select(["id", "status", "attempt", "max_attempts", "kind", "dispatched_at", "workflow_id", "step", "group_name", "priority", "has_dependents", "traceparent"])
          .where("id", "=", sql<number>`ANY(${sql.val(ids)}::bigint[])`)
          .orderBy("id")
          .forUpdate()
          .execute()
      : [];
    const rowById = new Map(rows.map((r) => [r.id, r]));
    const units = new Map<number, UnitState>(
      rows.map((r) => [r.id, { id: r.id, status: r.status, attempt: r.attempt, maxAttempts: r.max_attempts }]),
    );
    const now = new Date();
    // Times come from other hosts' clocks, or from a bogus message: none may be later than
    // ours, or a report dated 9999 would outrank every real one (and end a timeline first).
    const bounded = updates.map((u) => (u.at > now ? { ...u, at: now } : u)).map((u) => {
      // A fan-out the database cannot store ends the attempt, as a permanent error saying why.
      const row = u.spawn ? rowById.get(u.unitId) : undefined;
      const problem = row && u.spawn ? spawnProblem(row, u.spawn) : null;
      return problem ? { ...u, status: "error" as const, result: undefined, spawn: undefined, error: { message: problem, retryable: false } } : u;
    });
    const plan = planTransitions(units, bounded, { now, ...opts });

    if (plan.outcomes.size > 0) {
      const changed = [...plan.outcomes.entries()];
      // Fan-outs first: whoever waits for the spawning unit must wait for its join before the
      // success below satisfies their edge to it.
      for (const [id, o] of changed) {
        if (!o.spawn) continue;
        const r = rowById.get(id)!;
        await spawnSteps(trx, { id, workflowId: r.workflow_id, step: r.step, group: r.group_name, priority: r.priority, traceparent: r.traceparent }, o.spawn, opts.maxAttempts ?? 3);
      }
      await sql`
        UPDATE units AS u SET
          status = c.status,
          -- Waiting for an agent: pending but never ready (and in no ready count) until released.
          not_before = CASE WHEN c.wait THEN 'infinity'::timestamptz ELSE c.not_before END,
          -- ... and the dispatch that found no agent does not use up an attempt.
          max_attempts = u.max_attempts + CASE WHEN c.wait THEN 1 ELSE 0 END,
          agent_wait_since = CASE WHEN c.wait THEN COALESCE(u.agent_wait_since, now()) ELSE NULL END,
          result = COALESCE(c.result, u.result),
          last_error = CASE WHEN c.status = 'success' THEN NULL ELSE COALESCE(c.last_error, u.last_error) END,
          updated_at = now()
        FROM unnest(
          ${sql.val(changed.map(([id]) => id))}::bigint[],
          ${sql.val(changed.map(([, o]) => o.status))}::text[],
          ${sql.val(changed.map(([, o]) => o.notBefore))}::timestamptz[],
          ${sql.val(changed.map(([, o]) => (o.result === null || o.result === undefined ? null : JSON.stringify(o.result))))}::jsonb[],
          ${sql.val(changed.map(([, o]) => o.lastError))}::text[],
          ${sql.val(changed.map(([, o]) => o.waitForAgent === true))}::boolean[]
        ) AS c(id, status, not_before, result, last_error, wait)
        -- The ids again as an array: without it the planner may hash the whole table to join
        -- the unnest (a sequential scan per batch, growing with the table); with it, a probe of
        -- the primary key per unit.
        WHERE u.id = c.id AND u.id = ANY(${sql.val(changed.map(([id]) => id))}::bigint[])`.execute(trx);
      await insertEvents(trx, plan.applied);
      const waiting = [...new Set(changed.filter(([, o]) => o.waitForAgent).map(([id]) => rowById.get(id)!.kind))];
      if (waiting.length > 0) {
        await sql`INSERT INTO kinds_without_agents (kind, since) SELECT unnest(${sql.val(waiting)}::text[]), now() ON CONFLICT (kind) DO NOTHING`.execute(trx);
      }
    }
    const released = opts.agentKinds?.length ? await releaseWaitingUnits(trx, opts.agentKinds) : 0;
    const touched = plan.touched.filter((id) => !plan.outcomes.has(id));
    if (touched.length > 0) {
      await sql`UPDATE units SET updated_at = now() WHERE id = ANY(${sql.val(touched)}::bigint[]) AND status = 'processing'`.execute(trx);
    }

    if (opts.leader) {
      const at = opts.leader.at > now ? now : opts.leader.at;
      const firstAt = opts.leader.firstAt && opts.leader.firstAt < at ? opts.leader.firstAt : at;
      await trx
        .updateTable("control")
        .set({
          leader_id: opts.leader.id,
          leader_utilization: JSON.stringify(opts.leader.utilization),
          leader_reported_at: at,
          // A different leader than last time took over the outbox (failover or restart).
          leader_since: sql`CASE WHEN leader_id IS DISTINCT FROM ${opts.leader.id} THEN ${firstAt}::timestamptz ELSE leader_since END`,
        })
        .where("id", "=", true)
        // A redelivered old report must not replace a newer one.
        .where((eb) => eb.or([eb("leader_reported_at", "is", null), eb("leader_reported_at", "<=", at)]))
        .execute();
    }

    const refusedHeartbeats = opts.instances?.length ? await recordInstances(trx, opts.instances) : [];

    const ignored: ApplyResult["ignored"] = {};
    for (const { reason } of plan.ignored) ignored[reason] = (ignored[reason] ?? 0) + 1;
    let freed = 0;
    let retries = 0;
    for (const [id, o] of plan.outcomes) {
      const before = units.get(id)?.status;
      if ((before === "dispatched" || before === "queued") && o.status !== "queued") freed++;
      if (o.status === "pending") retries++;
    }
    let settledDependents = 0;
    for (const [id, o] of plan.outcomes) {
      if (o.spawn || (rowById.get(id)?.has_dependents && (o.status === "success" || o.status === "error"))) settledDependents++;
    }
    const finished: ApplyResult["finished"] = [];
    for (const a of plan.applied) {
      if (a.eventStatus !== "success" && a.eventStatus !== "error") continue;
      const row = rowById.get(a.unitId);
      if (!row?.dispatched_at) continue;
      finished.push({ kind: row.kind, status: a.eventStatus, seconds: Math.max(0, (a.at.getTime() - row.dispatched_at.getTime()) / 1000) });
    }
    return { applied: plan.applied.length, ignored, freed, retries, released, settledDependents, finished, refusedHeartbeats, cancelledRunning: plan.cancelledRunning };
  });
}

export interface NewEvent {
  unitId: number;
  attempt: number;
  eventStatus: string;
  at: Date;
  source: string;
  detail: Record<string, unknown> | null;
}

/** Append timeline rows in one statement. */
export async function insertEvents(db: Db, events: readonly NewEvent[]): Promise<void> {
  if (events.length === 0) return;
  await sql`
    INSERT INTO unit_events (unit_id, attempt, status, at, source, detail)
    SELECT * FROM unnest(
      ${sql.val(events.map((e) => e.unitId))}::bigint[],
      ${sql.val(events.map((e) => e.attempt))}::int[],
      ${sql.val(events.map((e) => e.eventStatus))}::text[],
      ${sql.val(events.map((e) => e.at))}::timestamptz[],
      ${sql.val(events.map((e) => e.source))}::text[],
      ${sql.val(events.map((e) => (e.detail ? JSON.stringify(e.detail) : null)))}::jsonb[]
    )`.execute(db);
}

/**
 * Upsert the service instances seen in a batch: last_seen is the api's clock (not the
 * sender's), and counters only grow, so a redelivered old heartbeat changes nothing. What a
 * heartbeat may claim is bounded first (implausibleHeartbeat): the refusals are returned.
 */
export async function recordInstances(db: Db, instances: readonly ServiceInstanceReport[]): Promise<RefusedHeartbeat[]> {
  const now = new Date();
  const refused: RefusedHeartbeat[] = [];
  // One row per instance, in key order (concurrent api replicas lock rows in the same order).
  const byKey = new Map<string, ServiceInstanceReport>();
  for (const reported of instances) {
    let i = reported;
    const wrong = implausibleHeartbeat(i, now);
    if (wrong) {
      refused.push({ service: i.service, id: i.id, reason: wrong.reason });
      if (wrong.field === "startedAt") continue;
      i = { ...i, deadLettered: 0 };
    }
    const key = `${i.service}\u0000${i.id}\u0000${i.startedAt.toISOString()}`;
    const seen = byKey.get(key);
    if (!seen || i.deadLettered > seen.deadLettered) byKey.set(key, i);
  }
  if (byKey.size === 0) return refused;
  const rows = [...byKey.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, i]) => i);
  await sql`
    INSERT INTO service_instances (service, id, started_at, last_seen, dead_lettered)
    SELECT s, i, st, now(), d FROM unnest(
      ${sql.val(rows.map((r) => r.service))}::text[],
      ${sql.val(rows.map((r) => r.id))}::text[],
      ${sql.val(rows.map((r) => r.startedAt))}::timestamptz[],
      ${sql.val(rows.map((r) => r.deadLettered))}::bigint[]
    ) AS x(s, i, st, d)
    ON CONFLICT (service, id, started_at) DO UPDATE SET
      last_seen = GREATEST(service_instances.last_seen, EXCLUDED.last_seen),
      dead_lettered = GREATEST(service_instances.dead_lettered, EXCLUDED.dead_lettered)`.execute(db);
  return refused;
}
