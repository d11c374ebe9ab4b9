import { sql, type RawBuilder } from "kysely";
import type { Db } from "./database.ts";
import { planDispatch, type GroupShare, type Pick, type ReadyGroup } from "./fair-share.ts";
import { run, statement, type Statement } from "./prepared.ts";
import { IN_FLIGHT, OUTSTANDING } from "@rtb/protocol";
import { statusList } from "./status-sql.ts";

/**
 * The inputs of the dispatch order (docs/architecture.md, "Dispatch"), read the same way by
 * GET /next (dispatch-order.ts) and the top-up (top-up.ts). Not exported from @rtb/db.
 *
 * One statement whose cost follows the number of groups at the priorities that matter and k,
 * never the backlog:
 *
 * - ready counts: the folded rows (ready_counts, ready_levels) plus the deltas not folded yet
 *   (ready_deltas: what other writers, enqueue or cancel, changed in the last second), plus
 *   the retries this statement releases (their deltas are written only at its end);
 * - the priorities that can matter: those with fewer than k ready units above them;
 * - at those, the candidate groups (fair-share.ts, `candidates`): every group with units in
 *   flight and room, and the first k of the others in the order of their first unit.
 */
export interface DispatchInputs {
  ready: ReadyGroup[];
  shares: Map<string, GroupShare>;
  /** Some priority with ready units was not read (it had k or more ready units above it). */
  partial: boolean;
  dispatching: boolean;
  /** dispatched + queued (the top-up's count; 0 for a preview) */
  outstanding: number;
  /** The number of units to plan: the preview's limit, or the top-up's free room. */
  free: number;
}

/**
 * The inputs of a preview of `limit`: first the retries whose backoff has ended are made
 * ready (not_before cleared), as the top-up does, so that both see the same backlog. With
 * `allLevels` (the second read of `planFrom`, right after a first one), every priority is read
 * and nothing released. The two are separate statements, not a parameter, so that each has a
 * plan PostgreSQL can keep (a generic plan does not know a boolean parameter's value, and costs
 * both branches).
 */
export function previewInputs(limit: number, opts: { allLevels: boolean }): Statement<InputRow> {
  return statement(opts.allLevels ? "rtb_all_inputs" : "rtb_preview_inputs", sql<InputRow>`
    WITH st AS (SELECT true AS dispatching, 0::bigint AS outstanding, ${limit}::bigint AS free),
    released AS (
      UPDATE units SET not_before = NULL
      WHERE status = 'pending' AND not_before <= now() AND ${sql.lit(!opts.allLevels)}
      RETURNING group_name, priority
    ),
    ${candidatesFrom(opts.allLevels)}`);
}

/**
 * The top-up's inputs, under its lock: the switch, outstanding and the free room (`maxQueue` -
 * outstanding), and with room, the retries released and the candidate groups. The top-up
 * keeps the ready counts itself (`inTopUp`), so the released retries are counted here.
 */
export function topUpInputs(maxQueue: number): Statement<InputRow> {
  return statement("rtb_top_up_inputs", sql<InputRow>`
    WITH st AS (
      SELECT c.dispatching, o.n AS outstanding, CASE WHEN c.dispatching THEN greatest(${maxQueue}::bigint - o.n, 0) ELSE 0 END AS free
      FROM control c CROSS JOIN (SELECT count(*) AS n FROM units WHERE status IN ${statusList(OUTSTANDING)}) AS o
    ),
    released AS (
      UPDATE units SET not_before = NULL
      WHERE status = 'pending' AND not_before <= now() AND (SELECT free FROM st) > 0
      RETURNING group_name, priority
    ),
    ${countReady(sql`SELECT priority, group_name, count(*) AS n FROM released GROUP BY priority, group_name`)},
    ${candidatesFrom(false)}`);
}

/**
 * CTEs adding `changes` (priority, group_name, n) to ready_counts and ready_levels: how a
 * top-up (`inTopUp`) keeps them.
 */
export function countReady(changes: RawBuilder<unknown>): RawBuilder<unknown> {
  return sql`
    ready_change AS (${changes}),
    into_counts AS (
      INSERT INTO ready_counts (priority, group_name, n) SELECT priority, group_name, n FROM ready_change
      ON CONFLICT (priority, group_name) DO UPDATE SET n = ready_counts.n + excluded.n
    ),
    into_levels AS (
      INSERT INTO ready_levels (priority, n) SELECT priority, sum(n) FROM ready_change GROUP BY priority
      ON CONFLICT (priority) DO UPDATE SET n = ready_levels.n + excluded.n
    )`;
}

/**
 * Given `st` (dispatching, outstanding, free) and `released` (retries made ready by this
 * statement), the candidate groups at the priorities that can matter, with their shares, then
 * one row of state (group_name null). Every part of a statement sees the same snapshot: the
 * released retries are neither in the deltas nor in the counts it reads, so they are added
 * here. `d`: what is not in ready_counts and ready_levels.
 */
function candidatesFrom(allLevels: boolean): RawBuilder<unknown> {
  return sql`
    d AS (
      SELECT priority, group_name, sum(n)::bigint AS n
      FROM (SELECT priority, group_name, n FROM ready_deltas UNION ALL SELECT priority, group_name, 1 FROM released) AS x
      GROUP BY priority, group_name
    ),
    lv AS (
      SELECT priority, sum(n)::bigint AS n
      FROM (SELECT priority, n FROM ready_levels UNION ALL SELECT priority, n FROM d) AS x
      GROUP BY priority HAVING sum(n) > 0
    ),
    above AS (SELECT priority, (sum(n) OVER (ORDER BY priority DESC) - n)::bigint AS above FROM lv),
    chosen AS (SELECT priority FROM above WHERE ${sql.lit(allLevels)} OR above < (SELECT free FROM st)),
    r AS (
      SELECT c.priority, c.group_name, c.n + coalesce(d.n, 0) AS ready
      FROM ready_counts c LEFT JOIN d USING (priority, group_name)
      WHERE c.priority = ANY (ARRAY(SELECT priority FROM chosen))
      UNION ALL
      SELECT d.priority, d.group_name, d.n FROM chosen JOIN d USING (priority)
      WHERE NOT EXISTS (SELECT FROM ready_counts c WHERE c.priority = d.priority AND c.group_name = d.group_name)
    ),
    f AS (SELECT group_name, count(*) AS in_flight FROM units WHERE status IN ${statusList(IN_FLIGHT)} GROUP BY group_name),
    j AS (
      SELECT r.priority, r.group_name, r.ready, coalesce(f.in_flight, 0) AS in_flight, coalesce(g.weight, 1) AS weight, g.max_in_flight, g.last_served
      FROM r LEFT JOIN f USING (group_name) LEFT JOIN unit_groups g ON g.name = r.group_name
      WHERE r.ready > 0 AND (SELECT free FROM st) > 0
    )
    SELECT priority, group_name, ready, in_flight, weight, max_in_flight, last_served,
           NULL::boolean AS dispatching, NULL::bigint AS outstanding, NULL::bigint AS free, NULL::boolean AS partial
    FROM j WHERE in_flight > 0 AND (max_in_flight IS NULL OR in_flight < max_in_flight)
    UNION ALL
    SELECT idle.priority, idle.group_name, ready, in_flight, weight, max_in_flight, last_served, NULL, NULL, NULL, NULL
    FROM chosen CROSS JOIN LATERAL (
      -- The order of a first unit among groups with nothing in flight; "C": code points, as fair-share.ts compares names.
      SELECT * FROM j WHERE j.priority = chosen.priority AND in_flight = 0
      ORDER BY weight DESC, last_served ASC NULLS FIRST, group_name COLLATE "C"
      LIMIT (SELECT free FROM st)
    ) AS idle
    UNION ALL
    SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, st.dispatching, st.outstanding, st.free,
           EXISTS (SELECT FROM above WHERE NOT (${sql.lit(allLevels)} OR above < st.free))
    FROM st`;
}

export interface InputRow {
  priority: number | null;
  group_name: string | null;
  ready: number | null;
  in_flight: number | null;
  weight: number | null;
  max_in_flight: number | null;
  last_served: number | null;
  dispatching: boolean | null;
  outstanding: number | null;
  free: number | null;
  partial: boolean | null;
}

export async function readInputs(db: Db, inputs: Statement<InputRow>): Promise<DispatchInputs> {
  const rows = await run(db, inputs);
  const out: DispatchInputs = { ready: [], shares: new Map(), partial: false, dispatching: false, outstanding: 0, free: 0 };
  for (const r of rows) {
    if (r.group_name === null) {
      out.dispatching = r.dispatching!;
      out.outstanding = Number(r.outstanding);
      out.free = Number(r.free);
      out.partial = r.partial!;
      continue;
    }
    out.ready.push({ group: r.group_name, priority: r.priority!, ready: Number(r.ready) });
    out.shares.set(r.group_name, { weight: r.weight!, maxInFlight: r.max_in_flight, inFlight: Number(r.in_flight), lastServed: r.last_served === null ? null : Number(r.last_served) });
  }
  return out;
}

/**
 * The picks for `inputs.free` units. When groups at their max_in_flight leave picks unfilled
 * and some priority was not read, every priority is read and the plan made again.
 */
export async function planFrom(db: Db, inputs: DispatchInputs): Promise<Pick[]> {
  const picks = planDispatch(inputs.ready, inputs.shares, inputs.free);
  if (picks.length >= inputs.free || !inputs.partial) return picks;
  const all = await readInputs(db, previewInputs(inputs.free, { allLevels: true }));
  return planDispatch(all.ready, all.shares, inputs.free);
}
