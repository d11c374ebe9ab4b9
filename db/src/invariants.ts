import { sql } from "kysely";
import type { Db } from "./database.ts";
import { IN_FLIGHT, OUTCOMES, OUTSTANDING, TERMINAL, zeroCounts, type UnitStatus } from "@rtb/protocol";
import { statusList } from "./status-sql.ts";

/** One broken rule, with a few of the units concerned (the count says how many in all). */
export interface Violation {
  rule: string;
  message: string;
  count: number;
  units: number[];
}

export interface StuckUnits {
  /** dispatched, with no re-publish for longer than the dispatch timeout + grace */
  dispatched: { id: number; attempt: number; sinceMs: number }[];
  /** queued (routed to a job queue) for longer than the dispatch timeout + grace, per kind */
  queued: { id: number; attempt: number; kind: string; sinceMs: number }[];
  /** processing for longer than the processing timeout + grace */
  processing: { id: number; attempt: number; sinceMs: number }[];
}

const SAMPLE = 10;

/**
 * The rules every run must keep, read from PostgreSQL alone (docs/architecture.md,
 * "Invariants"): per attempt exactly one `dispatched` event and at most one terminal event
 * (success, error, or a cancel while it was in flight), exactly one for every finished attempt; a unit in success/error has its terminal event; a
 * unit in `error` with attempts left failed permanently; the timeline has as many attempts
 * as the unit's counter. Set-based SQL, so it runs against a live system of any size.
 */
export async function checkTimelines(db: Db): Promise<Violation[]> {
  const { rows } = await sql<{ rule: string; count: number; units: number[] }>`
    WITH attempts AS (
      SELECT e.unit_id, e.attempt,
             count(*) FILTER (WHERE e.status = 'dispatched') AS dispatched,
             count(*) FILTER (WHERE e.status IN ${statusList(OUTCOMES)} OR e.status = 'cancelled') AS terminal,
             bool_or((e.detail->>'retryable')::boolean) FILTER (WHERE e.status = 'error') AS retryable
      FROM unit_events e
      -- Operator actions (a retry, a cancel of a pending unit: status pending/cancelled) are in
      -- the timeline too, but they are not part of an attempt's dispatch. A cancel from
      -- dispatched, queued or processing is: it ends that attempt (cancel.ts), as its terminal event.
      -- A workflow closing a unit whose dependency failed (source 'workflow') ends no attempt:
      -- the unit never ran (checkWorkflows has its rules).
      WHERE (e.status IN ${statusList([...IN_FLIGHT, ...OUTCOMES])}
         OR (e.status = 'cancelled' AND e.detail->>'from' IN ${statusList(IN_FLIGHT)}))
        AND e.source <> 'workflow'
      GROUP BY e.unit_id, e.attempt
    ),
    per_unit AS (
      SELECT u.id, u.status, u.attempt, u.max_attempts, u.closed_by,
             count(a.attempt) AS attempts,
             count(*) FILTER (WHERE a.dispatched <> 1) AS bad_dispatched,
             count(*) FILTER (WHERE a.terminal > 1) AS many_terminal,
             count(*) FILTER (WHERE a.attempt < u.attempt AND a.terminal <> 1) AS unfinished_earlier,
             bool_or(a.terminal = 1) FILTER (WHERE a.attempt = u.attempt) AS current_terminal,
             bool_or(a.retryable) FILTER (WHERE a.attempt = u.attempt) AS current_retryable
      FROM units u LEFT JOIN attempts a ON a.unit_id = u.id
      GROUP BY u.id
    ),
    broken AS (
      SELECT id, 'one_dispatch_per_attempt' AS rule FROM per_unit WHERE bad_dispatched > 0
      UNION ALL SELECT id, 'at_most_one_terminal_per_attempt' FROM per_unit WHERE many_terminal > 0
      UNION ALL SELECT id, 'finished_attempts_have_one_terminal' FROM per_unit WHERE unfinished_earlier > 0
      UNION ALL SELECT id, 'timeline_matches_attempts' FROM per_unit WHERE attempts <> attempt
      UNION ALL SELECT id, 'terminal_status_has_event' FROM per_unit WHERE status IN ${statusList(OUTCOMES)} AND current_terminal IS NOT TRUE AND closed_by IS NULL
      UNION ALL SELECT id, 'error_only_when_final' FROM per_unit WHERE status = 'error' AND attempt < max_attempts AND current_retryable IS NOT FALSE AND closed_by IS NULL
    )
    SELECT rule, count(*)::int AS count, (array_agg(id ORDER BY id))[1:${SAMPLE}] AS units FROM broken GROUP BY rule ORDER BY rule`.execute(db);
  const messages: Record<string, string> = {
    one_dispatch_per_attempt: "an attempt without exactly one `dispatched` event",
    at_most_one_terminal_per_attempt: "an attempt with more than one terminal (success/error, or a cancel while in flight) event",
    finished_attempts_have_one_terminal: "an earlier attempt that never got its terminal event",
    timeline_matches_attempts: "the timeline's attempts differ from the unit's attempt counter",
    terminal_status_has_event: "a unit in success/error without the terminal event of its current attempt",
    error_only_when_final: "a unit in error with attempts left that did not fail permanently",
  };
  return rows.map((r) => ({ rule: r.rule, message: messages[r.rule] ?? r.rule, count: r.count, units: r.units }));
}

/**
 * The workflow rules (docs/architecture.md, "Invariants"), from PostgreSQL alone:
 * - no unit was dispatched before its dependencies succeeded: the first `dispatched` event of
 *   a unit comes after a `success` event of each dependency it waits for (ignore edges: after
 *   the dependency's end); event ids order them, as the sequence hands them out in commit order
 *   across the transactions concerned;
 * - a blocked unit waits for something: an edge not satisfied to a dependency not finished,
 *   and `waiting_on` is the count of its unsatisfied edges (no wake-up lost);
 * - a unit that is closed (closed_by) names a dependency that failed;
 * - a finished workflow has no open step, and a running one has one (every workflow reaches
 *   its end); its status follows its steps (once retention pruned anything, only as far as the
 *   steps left can say: the one that decided an error or a cancel may be gone).
 * Dependencies pruned by retention are left out (their events are gone with them).
 */
export async function checkWorkflows(db: Db): Promise<Violation[]> {
  const { rows } = await sql<{ rule: string; count: number; units: number[] }>`
    WITH first_dispatch AS (
      SELECT e.unit_id, min(e.id) AS id FROM unit_events e
      WHERE e.status = 'dispatched' AND e.unit_id IN (SELECT unit_id FROM unit_deps) GROUP BY e.unit_id
    ),
    broken AS (
      SELECT d.unit_id AS id, 'dispatched_before_dependencies' AS rule
      FROM unit_deps d JOIN first_dispatch f ON f.unit_id = d.unit_id JOIN units p ON p.id = d.depends_on
      WHERE NOT EXISTS (
        SELECT FROM unit_events e WHERE e.unit_id = d.depends_on AND e.id < f.id
          AND (e.status = 'success' OR (d.on_failure = 'ignore' AND (e.status = 'cancelled' OR (e.status = 'error' AND (e.detail->>'final')::boolean))))
      )
      UNION ALL
      SELECT u.id, 'blocked_waits_for_something' FROM units u
      WHERE u.status = 'blocked' AND NOT EXISTS (
        SELECT FROM unit_deps d JOIN units p ON p.id = d.depends_on
        WHERE d.unit_id = u.id AND NOT d.satisfied AND p.status NOT IN ${statusList(TERMINAL)}
      )
      UNION ALL
      SELECT u.id, 'waiting_on_counts_open_edges' FROM units u
      WHERE u.status = 'blocked' AND u.waiting_on IS DISTINCT FROM (SELECT count(*) FROM unit_deps d WHERE d.unit_id = u.id AND NOT d.satisfied)
      UNION ALL
      SELECT u.id, 'closed_by_a_failed_dependency' FROM units u
      WHERE u.closed_by IS NOT NULL AND (u.status NOT IN ('error', 'cancelled')
        OR EXISTS (SELECT FROM units p WHERE p.id = u.closed_by AND p.status NOT IN ('error', 'cancelled')))
      UNION ALL
      SELECT w.id, 'finished_workflow_has_no_open_step' FROM workflows w
      WHERE w.status <> 'running' AND EXISTS (SELECT FROM units u WHERE u.workflow_id = w.id AND u.status NOT IN ${statusList(TERMINAL)})
      UNION ALL
      SELECT w.id, 'running_workflow_has_an_open_step' FROM workflows w
      WHERE w.status = 'running' AND NOT EXISTS (SELECT FROM units u WHERE u.workflow_id = w.id AND u.status NOT IN ${statusList(TERMINAL)})
      UNION ALL
      SELECT w.id, 'workflow_status_follows_steps' FROM workflows w
      WHERE w.status <> 'running' AND (
        -- Nothing ever pruned: the status is what the steps say.
        ((SELECT pruned_units FROM retention) = 0 AND w.status <> (
          SELECT CASE WHEN bool_or(u.status = 'error') THEN 'error' WHEN bool_or(u.status = 'cancelled') THEN 'cancelled' ELSE 'success' END
          FROM units u WHERE u.workflow_id = w.id))
        -- Retention takes a finished workflow's steps one by one, so the step that decided an
        -- error or a cancel may be gone; a failure left that the status does not show is not.
        OR (w.status = 'success' AND EXISTS (SELECT FROM units u WHERE u.workflow_id = w.id AND u.status <> 'success'))
        OR (w.status = 'cancelled' AND EXISTS (SELECT FROM units u WHERE u.workflow_id = w.id AND u.status = 'error')))
    )
    SELECT rule, count(*)::int AS count, (array_agg(id ORDER BY id))[1:${SAMPLE}] AS units FROM broken GROUP BY rule ORDER BY rule`.execute(db);
  const messages: Record<string, string> = {
    dispatched_before_dependencies: "a unit dispatched before a dependency it waits for succeeded (or, for an ignore edge, ended)",
    blocked_waits_for_something: "a blocked unit with no unsatisfied edge to an unfinished dependency: its wake-up was lost",
    waiting_on_counts_open_edges: "a blocked unit whose waiting_on differs from its unsatisfied edges",
    closed_by_a_failed_dependency: "a unit closed by a dependency that did not fail",
    finished_workflow_has_no_open_step: "a finished workflow (ids) with a step not finished",
    running_workflow_has_an_open_step: "a running workflow (ids) whose steps have all finished: it never ended",
    workflow_status_follows_steps: "a finished workflow (ids) whose status is not what its steps say",
  };
  return rows.map((r) => ({ rule: r.rule, message: messages[r.rule] ?? r.rule, count: r.count, units: r.units }));
}

/** Counts per status, read exactly (the checker is not the hot path). */
export async function countByStatus(db: Db): Promise<Record<UnitStatus, number>> {
  const rows = await db.selectFrom("units").select(["status", (eb) => eb.fn.countAll<number>().as("n")]).groupBy("status").execute();
  const counts = zeroCounts();
  for (const r of rows) counts[r.status] = r.n;
  return counts;
}

/** dispatched + queued right now: the number RTB_BROADCAST_MAX_QUEUE bounds. */
export async function outstandingNow(db: Db): Promise<number> {
  const row = await db
    .selectFrom("units")
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .where("status", "in", OUTSTANDING)
    .executeTakeFirstOrThrow();
  return row.n;
}

/** In-flight units older than their timeout plus `graceMs` (the reconciler should have acted). */
export async function stuckUnits(db: Db, opts: { dispatchTimeoutMs: number; processingTimeoutMs: number; graceMs: number }): Promise<StuckUnits> {
  const { rows } = await sql<{ id: number; attempt: number; kind: string; status: string; since_ms: number }>`
    SELECT id, attempt, kind, status,
           (extract(epoch FROM now() - CASE WHEN status = 'dispatched' THEN dispatched_at ELSE updated_at END) * 1000)::bigint AS since_ms
    FROM units
    WHERE ${isStuck(opts)}
    ORDER BY id
    LIMIT 1000`.execute(db);
  const pick = (status: string) => rows.filter((r) => r.status === status);
  return {
    dispatched: pick("dispatched").map((r) => ({ id: r.id, attempt: r.attempt, sinceMs: r.since_ms })),
    queued: pick("queued").map((r) => ({ id: r.id, attempt: r.attempt, kind: r.kind, sinceMs: r.since_ms })),
    processing: pick("processing").map((r) => ({ id: r.id, attempt: r.attempt, sinceMs: r.since_ms })),
  };
}

/**
 * In flight for longer than its timeout plus `graceMs`: `dispatched` since its dispatch,
 * `queued` or `processing` since its last report. One definition for the checker and for
 * GET /units?stuck=true.
 */
export function isStuck(opts: { dispatchTimeoutMs: number; processingTimeoutMs: number; graceMs: number }) {
  const dispatchSecs = (opts.dispatchTimeoutMs + opts.graceMs) / 1000;
  const processingSecs = (opts.processingTimeoutMs + opts.graceMs) / 1000;
  return sql<boolean>`(
       (status = 'dispatched' AND dispatched_at < now() - make_interval(secs => ${dispatchSecs}))
    OR (status = 'queued' AND updated_at < now() - make_interval(secs => ${dispatchSecs}))
    OR (status = 'processing' AND updated_at < now() - make_interval(secs => ${processingSecs})))`;
}

/**
 * Units still `dispatched` whose current attempt the reconciler re-published at least
 * `atLeast` times: their messages reach the broker and come to nothing, every time. The
 * renewed `dispatched_at` hides them from stuckUnits, so they are looked for on their own.
 */
export async function republishedWithoutProgress(db: Db, atLeast: number): Promise<{ id: number; attempt: number; republishes: number }[]> {
  const { rows } = await sql<{ id: number; attempt: number; republishes: number }>`
    SELECT id, attempt, republishes FROM units
    WHERE status = 'dispatched' AND republished_attempt = attempt AND republishes >= ${atLeast}
    ORDER BY id
    LIMIT 1000`.execute(db);
  return rows;
}
