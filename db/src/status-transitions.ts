import { isInFlight, type ReportedStatusName, type Spawn, type UnitStatus } from "@rtb/protocol";

/**
 * The status rules, as a pure function (docs/architecture.md, "Unit lifecycle").
 *
 * Within one attempt the ranks are dispatched < queued < processing < terminal. A reported
 * status is applied only when (1) its attempt is the unit's current attempt, (2) the unit is
 * in flight (dispatched, queued or processing) and (3) its rank is higher than the current
 * one. Everything else (a duplicate, a stale attempt, a report that arrives after a later
 * one) is ignored and counted. So each attempt gets exactly one terminal event, however
 * often the broker redelivers.
 *
 * A unit an operator cancelled (cancel.ts) is not in flight: every later report of its
 * attempt is ignored as `cancelled`, so a handler finishing as the cancel lands changes
 * nothing. A `queued` or `processing` report of it means its job is about to run or running
 * on an agent that did not hear the cancel: those are listed in `cancelledRunning`, and the
 * api announces the cancel again.
 */
export const RANK = { dispatched: 1, queued: 2, processing: 3, success: 4, error: 4 } as const;
export type RankedStatus = keyof typeof RANK;

export interface UnitState {
  id: number;
  status: UnitStatus;
  attempt: number;
  maxAttempts: number;
}

export interface ReportedUpdate {
  unitId: number;
  attempt: number;
  status: ReportedStatusName;
  at: Date;
  source: string;
  result?: unknown;
  error?: { message: string; retryable: boolean; noAgent?: true };
  /** success: the steps the handler fanned out (workflows.ts, spawnSteps). */
  spawn?: Spawn;
}

export type IgnoreReason = "unknown_unit" | "stale_attempt" | "cancelled" | "not_in_flight" | "not_forward";

export interface AppliedTransition {
  unitId: number;
  attempt: number;
  /** The status recorded in the unit's timeline. */
  eventStatus: RankedStatus;
  at: Date;
  source: string;
  detail: Record<string, unknown> | null;
}

export interface UnitOutcome {
  status: UnitStatus;
  notBefore: Date | null;
  /**
   * No agent consumes the unit's kind (the leader found no job queue): back to the backlog,
   * not ready until an agent of its kind announces itself, and this dispatch does not count
   * as an attempt (apply-status.ts gives the unit one more).
   */
  waitForAgent?: true;
  result: unknown;
  lastError: string | null;
  /** A success that fans out: these steps are enqueued with it (apply-status.ts). */
  spawn?: Spawn;
}

export interface Plan {
  applied: AppliedTransition[];
  ignored: { update: ReportedUpdate; reason: IgnoreReason }[];
  /** New row values per unit that changed. */
  outcomes: Map<number, UnitOutcome>;
  /**
   * Units whose current attempt was reported `processing` again (a job redelivered to another
   * agent after the first one died): no new event, but the processing timeout starts over,
   * so the reconciler does not expire the new run on the dead agent's clock.
   */
  touched: number[];
  /** Attempts of cancelled units reported `queued` or `processing`: agents are to hear the cancel again. */
  cancelledRunning: { unitId: number; attempt: number }[];
}

/** Delay before attempt `attempt + 1`: base * 2^(attempt-1), capped. */
export function retryDelayMs(attempt: number, baseMs: number, maxMs: number): number {
  return Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1));
}

export function planTransitions(
  units: ReadonlyMap<number, UnitState>,
  updates: readonly ReportedUpdate[],
  opts: { now: Date; retryBaseMs: number; retryMaxMs: number },
): Plan {
  const plan: Plan = { applied: [], ignored: [], outcomes: new Map(), touched: [], cancelledRunning: [] };
  const state = new Map<number, UnitState>();
  const reannounced = new Set<string>();
  // Within a batch, lower ranks first, so that `processing` and `success` delivered together
  // (or reordered by a redelivery) both reach the timeline. Stable, so equal ranks keep order.
  const ordered = [...updates].sort((a, b) => RANK[a.status] - RANK[b.status]);

  for (const u of ordered) {
    const current = state.get(u.unitId) ?? units.get(u.unitId);
    if (!current) {
      plan.ignored.push({ update: u, reason: "unknown_unit" });
      continue;
    }
    if (u.attempt !== current.attempt) {
      plan.ignored.push({ update: u, reason: "stale_attempt" });
      continue;
    }
    if (current.status === "cancelled") {
      plan.ignored.push({ update: u, reason: "cancelled" });
      if (u.status === "queued" || u.status === "processing") {
        const key = `${u.unitId}:${u.attempt}`;
        if (!reannounced.has(key)) plan.cancelledRunning.push({ unitId: u.unitId, attempt: u.attempt });
        reannounced.add(key);
      }
      continue;
    }
    if (!isInFlight(current.status)) {
      plan.ignored.push({ update: u, reason: "not_in_flight" });
      continue;
    }
    if (RANK[u.status] <= RANK[current.status as RankedStatus]) {
      if (u.status === "processing" && current.status === "processing") plan.touched.push(u.unitId);
      plan.ignored.push({ update: u, reason: "not_forward" });
      continue;
    }

    let outcome: UnitOutcome;
    let detail: Record<string, unknown> | null = null;
    if (u.status === "error" && u.error?.noAgent) {
      const message = u.error.message;
      detail = { message, noAgent: true, counted: false };
      outcome = { status: "pending", notBefore: null, waitForAgent: true, result: null, lastError: message };
    } else if (u.status === "error") {
      const message = u.error?.message ?? "unknown error";
      const retryable = u.error?.retryable ?? true;
      const willRetry = retryable && current.attempt < current.maxAttempts;
      const retryAt = willRetry ? new Date(opts.now.getTime() + retryDelayMs(current.attempt, opts.retryBaseMs, opts.retryMaxMs)) : null;
      detail = { message, retryable, ...(retryAt ? { retryAt: retryAt.toISOString() } : { final: true }) };
      outcome = { status: willRetry ? "pending" : "error", notBefore: retryAt, result: null, lastError: message };
    } else if (u.status === "success") {
      detail = u.result === undefined && !u.spawn ? null : { ...(u.result === undefined ? {} : { result: u.result }), ...(u.spawn ? { spawned: u.spawn.steps.length + (u.spawn.join ? 1 : 0) } : {}) };
      outcome = { status: "success", notBefore: null, result: u.result ?? null, lastError: null, ...(u.spawn ? { spawn: u.spawn } : {}) };
    } else {
      outcome = { status: u.status, notBefore: null, result: null, lastError: null };
    }

    plan.applied.push({ unitId: u.unitId, attempt: u.attempt, eventStatus: u.status, at: u.at, source: u.source, detail });
    plan.outcomes.set(u.unitId, outcome);
    state.set(u.unitId, { ...current, status: outcome.status });
  }
  return plan;
}
