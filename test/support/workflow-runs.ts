import { sql } from "kysely";
import type { Db } from "@rtb/db";

/**
 * Workflows for runs with faults (the fault tests and `npm run chaos`, which imports this file
 * directly: nothing here may import vitest): order-like DAGs of the built-in `simulate`
 * handler, in a few shapes that exercise every failure policy and a fan-out, and the checks a
 * finished run makes of them on top of the product's checker.
 *
 * Every shape is the order example: validate, then charge and reserve side by side, then ship
 * (waiting for both), then notify.
 */
export const ORDER_SHAPES = ["order", "order-declined", "order-declined-fail", "order-lenient", "order-lines", "order-lines-declined"] as const;
export type OrderShape = (typeof ORDER_SHAPES)[number];

/** How many lines a fan-out spawns (plus its join, `charge/packed`). */
export const ORDER_LINES = 3;

export interface OrderShapeInfo {
  /**
   * - order: every step succeeds.
   * - order-declined: charge fails permanently (payload.fail); ship and notify are cancelled.
   * - order-declined-fail: the same with onFailure fail: ship and notify end in error.
   * - order-lenient: reserve fails permanently, but ship's edge to it is `ignore`: ship runs
   *   with charge's result alone, then notify.
   * - order-lines: charge fans out three lines and a join (payload.spawn); ship waits for the
   *   join too, and gets charge, charge/packed and reserve.
   * - order-lines-declined: the same with line 2 failing: the join, ship and notify are cancelled.
   */
  what: string;
  /** The workflow's status once finished, when no fault decided otherwise. */
  status: "success" | "error" | "cancelled";
  /** Its steps once finished, the fan-out's included. */
  steps: number;
  /** Of those, how many end cancelled (closed by a failed dependency). */
  cancelled: number;
  /** The steps with dependencies that succeed, and the names of the results each is handed (its result's `inputs`). */
  inputs: Record<string, string[]>;
}

const lineNames = Array.from({ length: ORDER_LINES }, (_, i) => `charge/line-${i + 1}`);
export const SHAPE_INFO: Record<OrderShape, OrderShapeInfo> = {
  order: {
    what: "every step succeeds",
    status: "success",
    steps: 5,
    cancelled: 0,
    inputs: { charge: ["validate"], reserve: ["validate"], ship: ["charge", "reserve"], notify: ["ship"] },
  },
  "order-declined": { what: "charge fails: ship, notify cancelled", status: "error", steps: 5, cancelled: 2, inputs: { reserve: ["validate"] } },
  "order-declined-fail": { what: "charge fails, onFailure fail: ship, notify error", status: "error", steps: 5, cancelled: 0, inputs: { reserve: ["validate"] } },
  "order-lenient": {
    what: "reserve fails, ship ignores it",
    status: "error",
    steps: 5,
    cancelled: 0,
    inputs: { charge: ["validate"], ship: ["charge"], notify: ["ship"] },
  },
  "order-lines": {
    what: "charge fans out 3 lines and a join",
    status: "success",
    steps: 5 + ORDER_LINES + 1,
    cancelled: 0,
    inputs: { charge: ["validate"], reserve: ["validate"], "charge/packed": lineNames, ship: ["charge", "charge/packed", "reserve"], notify: ["ship"] },
  },
  "order-lines-declined": {
    what: "a line fails: join, ship, notify cancelled",
    status: "error",
    steps: 5 + ORDER_LINES + 1,
    cancelled: 3,
    inputs: { charge: ["validate"], reserve: ["validate"] },
  },
};

/**
 * A POST /workflows body of this shape. `priority` is the first step's; `laterPriority` the
 * others' (and, through charge, the fan-out's): lower than the backlog's, it keeps the steps
 * that follow validate waiting in the backlog once validate succeeded. `maxAttempts` per step
 * (RTB_AGENT_ERROR_RATE's failures are retryable: enough attempts make the shape's outcome certain).
 */
export function orderWorkflow(shape: OrderShape, opts: { ref?: string; group?: string; priority?: number; laterPriority?: number; maxAttempts?: number } = {}) {
  const later = opts.laterPriority ?? opts.priority ?? 0;
  const fields = { priority: later, ...(opts.maxAttempts === undefined ? {} : { maxAttempts: opts.maxAttempts }) };
  const lines = shape === "order-lines" || shape === "order-lines-declined";
  const spawn = {
    steps: Array.from({ length: ORDER_LINES }, (_, i) => ({
      step: `line-${i + 1}`,
      kind: "simulate",
      payload: shape === "order-lines-declined" && i === 1 ? { line: i + 1, fail: true } : { line: i + 1 },
      ...(opts.maxAttempts === undefined ? {} : { maxAttempts: opts.maxAttempts }),
    })),
    join: { step: "packed", kind: "simulate", payload: {}, ...(opts.maxAttempts === undefined ? {} : { maxAttempts: opts.maxAttempts }) },
  };
  const chargePayload = shape === "order-declined" || shape === "order-declined-fail" ? { fail: true } : lines ? { spawn } : {};
  return {
    name: shape,
    ...(opts.ref === undefined ? {} : { ref: opts.ref }),
    group: opts.group ?? "orders",
    onFailure: shape === "order-declined-fail" ? "fail" : "cancel",
    steps: [
      { step: "validate", kind: "simulate", priority: opts.priority ?? 0, ...(opts.maxAttempts === undefined ? {} : { maxAttempts: opts.maxAttempts }) },
      { step: "charge", kind: "simulate", payload: chargePayload, dependsOn: ["validate"], ...fields },
      { step: "reserve", kind: "simulate", payload: shape === "order-lenient" ? { fail: true } : {}, dependsOn: ["validate"], ...fields },
      { step: "ship", kind: "simulate", dependsOn: ["charge", shape === "order-lenient" ? { step: "reserve", onFailure: "ignore" } : "reserve"], ...fields },
      { step: "notify", kind: "simulate", dependsOn: ["ship"], ...fields },
    ],
  };
}

/** A step whose result does not name exactly the dependencies that succeeded. */
export interface InputsMismatch {
  unitId: number;
  workflowId: number | null;
  step: string | null;
  /** What the simulate handler said it was given (its result's `inputs`). */
  inputs: string[];
  /** Its dependencies that succeeded, by the names they are handed on under. */
  succeeded: string[];
}

/**
 * "Results passed exactly": every `simulate` unit with dependencies that succeeded was handed
 * exactly its dependencies that succeeded (the handler returns their names as `inputs`), read
 * from unit_deps and units. A dependency retention pruned (a finished unit nobody open waits
 * for: its edge went with it) cannot be checked: a name in `inputs` that is neither an edge of
 * the unit nor a step of its workflow any more is such a one, and is counted, not refused.
 *
 * A succeeded step and what it was handed never change, so a run may check while it goes on
 * (before retention removes what it checks) and add up what it found.
 *
 * This holds for a run in which no dependency can succeed after its dependent was dispatched:
 * only one reached through an `ignore` edge could (it ended, the dependent ran, then an
 * operator retried it), so the runs that check this never retry a step an ignore edge names.
 */
export async function checkInputs(db: Db): Promise<{ checked: number; withPruned: number; mismatches: InputsMismatch[]; ids: number[]; prunedIds: number[] }> {
  const { rows } = await sql<{ id: number; workflow_id: number | null; step: string | null; inputs: string[]; succeeded: string[]; bad: boolean; pruned: boolean }>`
    WITH units_checked AS (
      SELECT u.id, u.workflow_id, u.step,
        ARRAY(SELECT jsonb_array_elements_text(CASE WHEN jsonb_typeof(u.result->'inputs') = 'array' THEN u.result->'inputs' ELSE '[]'::jsonb END) ORDER BY 1) AS inputs,
        ARRAY(SELECT coalesce(p.step, p.ref, p.id::text) FROM unit_deps d JOIN units p ON p.id = d.depends_on
              WHERE d.unit_id = u.id AND p.status = 'success' ORDER BY 1) AS succeeded,
        ARRAY(SELECT coalesce(p.step, p.ref, p.id::text) FROM unit_deps d JOIN units p ON p.id = d.depends_on WHERE d.unit_id = u.id) AS edges
      FROM units u
      WHERE u.kind = 'simulate' AND u.status = 'success' AND u.waiting_on IS NOT NULL
    ),
    judged AS (
      SELECT c.*,
        -- a name handed on that is not a dependency that succeeded, though it is still there to say so
        EXISTS (SELECT FROM unnest(c.inputs) i WHERE i <> ALL(c.succeeded)
                  AND (i = ANY(c.edges) OR EXISTS (SELECT FROM units s WHERE s.workflow_id = c.workflow_id AND s.step = i))) AS extra,
        EXISTS (SELECT FROM unnest(c.inputs) i WHERE i <> ALL(c.edges)
                  AND NOT EXISTS (SELECT FROM units s WHERE s.workflow_id = c.workflow_id AND s.step = i)) AS pruned
      FROM units_checked c
    )
    SELECT id, workflow_id, step, inputs, succeeded, pruned, (NOT (succeeded <@ inputs) OR extra) AS bad FROM judged ORDER BY id`.execute(db);
  return {
    checked: rows.length,
    withPruned: rows.filter((r) => r.pruned).length,
    ids: rows.map((r) => r.id),
    prunedIds: rows.filter((r) => r.pruned).map((r) => r.id),
    mismatches: rows.filter((r) => r.bad).map((r) => ({ unitId: r.id, workflowId: r.workflow_id, step: r.step, inputs: r.inputs, succeeded: r.succeeded })),
  };
}

/** Workflows still running, and how many there are per status (the ones retention removed are not counted). */
export async function workflowStatuses(db: Db): Promise<{ running: number[]; counts: Record<string, number> }> {
  const { rows } = await sql<{ status: string; n: number; ids: number[] }>`
    SELECT status, count(*)::int AS n, (array_agg(id ORDER BY id))[1:10] AS ids FROM workflows GROUP BY status`.execute(db);
  return { running: rows.find((r) => r.status === "running")?.ids ?? [], counts: Object.fromEntries(rows.map((r) => [r.status, r.n])) };
}

/** A workflow as GET /workflows/:id shows it (what the runs read of it). */
export interface WorkflowSnapshot {
  id: number;
  name: string;
  status: string;
  steps: { id: number; step: string; status: string; attempt: number; result: unknown; closedBy: number | null }[];
}

/**
 * Poll GET /workflows/:id for each of `ids` until every one has ended; each one's steps as last
 * seen across the polls, so that a step retention removed once its workflow ended (a step
 * finished long before is removed at the next pass) is still there, as it was. Start polling
 * while they run. `get` answers the parsed body, or throws (the api may be restarting: it is
 * asked again).
 */
export async function awaitWorkflowsEnded(get: (path: string) => Promise<any>, ids: readonly number[], timeoutMs = 60_000): Promise<Map<number, WorkflowSnapshot>> {
  const seen = new Map<number, Map<string, WorkflowSnapshot["steps"][number]>>(ids.map((id) => [id, new Map()]));
  const ended = new Map<number, WorkflowSnapshot>();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const id of ids) {
      if (ended.has(id)) continue;
      const wf = (await get(`/workflows/${id}`).catch(() => null)) as WorkflowSnapshot | null;
      if (!wf?.status) continue;
      const steps = seen.get(id)!;
      for (const s of wf.steps) steps.set(s.step, s);
      if (wf.status !== "running") ended.set(id, { ...wf, steps: [...steps.values()] });
    }
    if (ended.size === ids.length) return ended;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for workflows ${ids.filter((id) => !ended.has(id)).join(", ")} to end`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** What a finished workflow of a known shape shows, for comparing with SHAPE_INFO: its status, step count, and each succeeded step's inputs. */
export function shapeOutcome(wf: WorkflowSnapshot): { status: string; steps: number; cancelled: number; inputs: Record<string, string[]> } {
  const inputs: Record<string, string[]> = {};
  for (const s of wf.steps) {
    const got = (s.result as { inputs?: string[] } | null)?.inputs;
    if (s.status === "success" && got) inputs[s.step] = [...got].sort();
  }
  return { status: wf.status, steps: wf.steps.length, cancelled: wf.steps.filter((s) => s.status === "cancelled").length, inputs };
}

/** SHAPE_INFO's view of a shape, in shapeOutcome's terms. */
export function expectedOutcome(shape: OrderShape): ReturnType<typeof shapeOutcome> {
  const info = SHAPE_INFO[shape];
  return { status: info.status, steps: info.steps, cancelled: info.cancelled, inputs: Object.fromEntries(Object.entries(info.inputs).map(([k, v]) => [k, [...v].sort()])) };
}
