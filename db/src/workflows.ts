import { sql } from "kysely";
import { TERMINAL, type FailurePolicy, type Spawn, type UnitStatus } from "@rtb/protocol";
import { statusList } from "./status-sql.ts";
import type { Db } from "./database.ts";
import type { WorkflowStatus } from "./schema.ts";
import { enqueueUnits, type NewUnit } from "./units.ts";

/**
 * Workflows and dependencies (docs/architecture.md, "Workflows"). A unit with dependencies is
 * `blocked` until each is satisfied: a dependency is satisfied by its success, or by any end
 * when the edge's policy is `ignore`; one that ends in error or is cancelled closes its
 * dependents otherwise (cancel: cancelled, fail: error). All of that happens in the
 * transaction that finishes the dependency, by the trigger of migration 0010; this module
 * writes workflows and edges, and reads them back.
 */

/** One edge: `unitId` waits for `dependsOn`. */
export interface NewEdge {
  unitId: number;
  dependsOn: number;
  onFailure: FailurePolicy;
}

/**
 * Give units their dependencies, in the caller's transaction: new units enqueued with
 * `dependencies` (blocked, waiting_on 0), or existing ones (a fan-out's join for whoever waited
 * for the spawning unit). The dependencies are locked first, in id order (and marked as having
 * dependents), so one finishing meanwhile is either seen finished here or finishes after this
 * commits and its trigger sees the edges. Each edge is written satisfied or not from what its
 * dependency is now, each unit's waiting_on goes up by its unsatisfied new edges (a relative
 * update: a concurrent decrement is never overwritten), one left with none becomes pending,
 * and one waiting for a dependency that already failed is closed (rtb_reclose).
 */
export async function addDependencies(db: Db, edges: readonly NewEdge[]): Promise<void> {
  if (edges.length === 0) return;
  const deps = [...new Set(edges.map((e) => e.dependsOn))].sort((a, b) => a - b);
  // A join with the locked rows, not "id = ANY(ARRAY(...))": with 10,000 dependencies (a
  // fan-out's join) the planner scanned the table and searched the array for every row
  // (7-9 s of a 9,999-child spawn).
  await sql`
    UPDATE units u SET has_dependents = true
    FROM (SELECT id FROM units WHERE id = ANY(${sql.val(deps)}::bigint[]) ORDER BY id FOR NO KEY UPDATE) AS l
    WHERE u.id = l.id AND NOT u.has_dependents`.execute(db);
  const units = [...new Set(edges.map((e) => e.unitId))].sort((a, b) => a - b);
  await sql`
    WITH added AS (
      INSERT INTO unit_deps (unit_id, depends_on, on_failure, satisfied)
      SELECT e.u, e.d, e.f, (p.status = 'success' OR (p.status IN ${statusList(TERMINAL)} AND e.f = 'ignore'))
      FROM unnest(
        ${sql.val(edges.map((e) => e.unitId))}::bigint[],
        ${sql.val(edges.map((e) => e.dependsOn))}::bigint[],
        ${sql.val(edges.map((e) => e.onFailure))}::text[]
      ) AS e(u, d, f)
      JOIN units p ON p.id = e.d
      ON CONFLICT DO NOTHING
      RETURNING unit_id, satisfied
    ),
    per AS (
      SELECT x.id, count(a.unit_id) FILTER (WHERE NOT a.satisfied) AS open
      FROM unnest(${sql.val(units)}::bigint[]) AS x(id) LEFT JOIN added a ON a.unit_id = x.id
      GROUP BY x.id
    ),
    changed AS (
      UPDATE units u SET
        waiting_on = coalesce(u.waiting_on, 0) + per.open,
        status = CASE WHEN u.status = 'blocked' AND coalesce(u.waiting_on, 0) + per.open = 0 THEN 'pending' ELSE u.status END
      FROM per, units b
      WHERE u.id = per.id AND b.id = u.id AND u.id = ANY(${sql.val(units)}::bigint[])
      RETURNING u.id, u.attempt, u.status, b.status AS was
    )
    INSERT INTO unit_events (unit_id, attempt, status, at, source, detail)
    SELECT id, attempt, 'pending', now(), 'workflow', '{"action":"unblocked"}'::jsonb FROM changed WHERE status = 'pending' AND was = 'blocked'`.execute(db);
  await sql`SELECT rtb_reclose(${sql.val(units)}::bigint[])`.execute(db);
}

export interface NewStep {
  step: string;
  unit: Omit<NewUnit, "workflow" | "dependencies">;
  dependsOn: readonly { step: string; onFailure?: FailurePolicy | undefined }[];
}

export interface NewWorkflow {
  name: string;
  ref: string | null;
  onFailure: FailurePolicy;
  steps: readonly NewStep[];
}

/**
 * Enqueue a workflow and all its steps, in the caller's transaction (POST /workflows runs it
 * in one, so it is all or nothing). A ref that exists already returns that workflow, with
 * `created: false`, and writes nothing. The steps must form a DAG (dagProblem in @rtb/protocol
 * checked that): they are inserted in order, steps without dependencies pending at once.
 */
export async function enqueueWorkflow(db: Db, wf: NewWorkflow): Promise<{ id: number; created: boolean }> {
  const inserted = await sql<{ id: number }>`
    INSERT INTO workflows (name, ref, on_failure) VALUES (${wf.name}, ${wf.ref}, ${wf.onFailure})
    ON CONFLICT (ref) DO NOTHING RETURNING id`.execute(db);
  if (inserted.rows[0] === undefined) {
    const existing = await db.selectFrom("workflows").select("id").where("ref", "=", wf.ref!).executeTakeFirstOrThrow();
    return { id: existing.id, created: false };
  }
  const id = inserted.rows[0].id;
  const units = await enqueueUnits(
    db,
    wf.steps.map((s) => ({ ...s.unit, workflow: { id, step: s.step }, dependencies: s.dependsOn.length })),
  );
  const ids = new Map(wf.steps.map((s, i) => [s.step, units[i]!.id]));
  await addDependencies(
    db,
    wf.steps.flatMap((s, i) => s.dependsOn.map((d) => ({ unitId: units[i]!.id, dependsOn: ids.get(d.step)!, onFailure: d.onFailure ?? wf.onFailure }))),
  );
  return { id, created: true };
}

/** The unit whose success spawns (its row is locked by the caller). */
export interface SpawningUnit {
  id: number;
  workflowId: number | null;
  step: string | null;
  group: string;
  priority: number;
  /** Its trace (units.traceparent): the steps it fans out continue it. */
  traceparent?: string | null;
}

/**
 * A handler's fan-out, applied with its success (apply-status.ts, before the success itself
 * is written): the new steps join the parent's workflow, named `<parent step>/<name>`, with
 * their edges among themselves; the join waits for all of them, and whoever waited for the
 * parent waits for the join as well. Steps that exist already under those names (the
 * parent ran again after an operator's retry) are not made twice: the spawn is idempotent by
 * name. Returns the ids of the steps made.
 */
export async function spawnSteps(db: Db, parent: SpawningUnit, spawn: Spawn, maxAttempts: number): Promise<number[]> {
  const prefix = parent.step ?? `unit-${parent.id}`;
  const name = (local: string) => `${prefix}/${local}`;
  const policy = parent.workflowId === null
    ? "cancel"
    : ((await db.selectFrom("workflows").select("on_failure").where("id", "=", parent.workflowId).executeTakeFirst())?.on_failure ?? "cancel");
  const steps = [
    ...spawn.steps.map((s) => ({ ...s, dependsOn: s.dependsOn.map((d) => (typeof d === "string" ? { step: d, onFailure: undefined } : d)) })),
    ...(spawn.join ? [{ ...spawn.join, dependsOn: spawn.steps.map((s) => ({ step: s.step, onFailure: undefined })) }] : []),
  ];
  const existing = new Map<string, number>();
  if (parent.workflowId !== null) {
    const rows = await db
      .selectFrom("units")
      .select(["id", "step"])
      .where("workflow_id", "=", parent.workflowId)
      .where("step", "in", steps.map((s) => name(s.step)))
      .execute();
    for (const r of rows) existing.set(r.step!, r.id);
  }
  const fresh = steps.filter((s) => !existing.has(name(s.step)));
  const made = await enqueueUnits(
    db,
    fresh.map((s) => ({
      kind: s.kind,
      group: s.group ?? parent.group,
      priority: s.priority ?? parent.priority,
      payload: s.payload,
      ref: null,
      maxAttempts: s.maxAttempts ?? maxAttempts,
      delayMs: s.delayMs ?? null,
      workflow: parent.workflowId === null ? null : { id: parent.workflowId, step: name(s.step) },
      dependencies: s.dependsOn.length,
      traceparent: parent.traceparent ?? null,
    })),
  );
  const ids = new Map(existing);
  fresh.forEach((s, i) => ids.set(name(s.step), made[i]!.id));
  const edges: NewEdge[] = fresh.flatMap((s) =>
    s.dependsOn.map((d) => ({ unitId: ids.get(name(s.step))!, dependsOn: ids.get(name(d.step))!, onFailure: d.onFailure ?? policy })),
  );
  if (spawn.join) {
    const joinId = ids.get(name(spawn.join.step))!;
    const waiting = await db.selectFrom("unit_deps").select(["unit_id", "on_failure"]).where("depends_on", "=", parent.id).execute();
    for (const w of waiting) edges.push({ unitId: w.unit_id, dependsOn: joinId, onFailure: w.on_failure });
  }
  await addDependencies(db, edges);
  return made.map((m) => m.id);
}

/** A spawn's problem that only the database can see: a stored name too long. null: none. */
export function spawnProblem(parent: Pick<SpawningUnit, "id" | "step">, spawn: Spawn): string | null {
  const prefix = parent.step ?? `unit-${parent.id}`;
  const all = [...spawn.steps, ...(spawn.join ? [spawn.join] : [])];
  const long = all.find((s) => prefix.length + 1 + s.step.length > 200);
  return long ? `spawn: step "${prefix}/${long.step}" would be longer than 200 characters` : null;
}

export interface WorkflowStep {
  id: number;
  step: string;
  kind: string;
  status: UnitStatus;
  attempt: number;
  /** The edges this step waits for: the step it names, its unit, the policy, whether it is satisfied. */
  dependsOn: { step: string | null; unitId: number; onFailure: FailurePolicy; satisfied: boolean }[];
  waitingOn: number | null;
  result: unknown;
  lastError: string | null;
  closedBy: number | null;
  updatedAt: Date;
}

export interface Workflow {
  id: number;
  name: string;
  ref: string | null;
  status: WorkflowStatus;
  onFailure: FailurePolicy;
  /** Steps per status. */
  counts: Partial<Record<UnitStatus, number>>;
  createdAt: Date;
  updatedAt: Date;
  finishedAt: Date | null;
}

const toWorkflow = (r: { id: number; name: string; ref: string | null; status: WorkflowStatus; on_failure: FailurePolicy; created_at: Date; updated_at: Date; finished_at: Date | null; counts: Record<string, number> | null }): Workflow => ({
  id: r.id,
  name: r.name,
  ref: r.ref,
  status: r.status,
  onFailure: r.on_failure,
  counts: r.counts ?? {},
  createdAt: r.created_at,
  updatedAt: r.updated_at,
  finishedAt: r.finished_at,
});

const countsColumn = sql<Record<string, number> | null>`(SELECT json_object_agg(status, n) FROM (SELECT status, count(*) AS n FROM units WHERE workflow_id = w.id GROUP BY status) c)`;

/** One workflow with every step and its edges; null when there is none with this id. */
export async function getWorkflow(db: Db, id: number): Promise<(Workflow & { steps: WorkflowStep[] }) | null> {
  const { rows } = await sql<Parameters<typeof toWorkflow>[0]>`SELECT w.*, ${countsColumn} AS counts FROM workflows w WHERE w.id = ${id}`.execute(db);
  if (!rows[0]) return null;
  const steps = await sql<{
    id: number; step: string; kind: string; status: UnitStatus; attempt: number; waiting_on: number | null; result: unknown;
    last_error: string | null; closed_by: number | null; updated_at: Date; deps: WorkflowStep["dependsOn"] | null;
  }>`
    SELECT u.id, u.step, u.kind, u.status, u.attempt, u.waiting_on, u.result, u.last_error, u.closed_by, u.updated_at,
      (SELECT json_agg(json_build_object('step', p.step, 'unitId', d.depends_on, 'onFailure', d.on_failure, 'satisfied', d.satisfied) ORDER BY d.depends_on)
       FROM unit_deps d LEFT JOIN units p ON p.id = d.depends_on WHERE d.unit_id = u.id) AS deps
    FROM units u WHERE u.workflow_id = ${id}
    ORDER BY u.id`.execute(db);
  return {
    ...toWorkflow(rows[0]),
    steps: steps.rows.map((s) => ({
      id: s.id,
      step: s.step,
      kind: s.kind,
      status: s.status,
      attempt: s.attempt,
      dependsOn: s.deps ?? [],
      waitingOn: s.waiting_on,
      result: s.result,
      lastError: s.last_error,
      closedBy: s.closed_by,
      updatedAt: s.updated_at,
    })),
  };
}

export interface WorkflowFilter {
  statuses?: readonly WorkflowStatus[];
  name?: string;
  ref?: string;
  beforeId?: number;
  limit: number;
}

/** Workflows newest first, filtered, with their steps counted per status; `nextBeforeId` continues. */
export async function listWorkflows(db: Db, f: WorkflowFilter): Promise<{ workflows: Workflow[]; nextBeforeId: number | null }> {
  const { rows } = await sql<Parameters<typeof toWorkflow>[0]>`
    SELECT w.*, ${countsColumn} AS counts FROM workflows w
    WHERE true
      ${f.statuses?.length ? sql`AND w.status = ANY(${sql.val(f.statuses)}::text[])` : sql``}
      ${f.name !== undefined ? sql`AND w.name = ${f.name}` : sql``}
      ${f.ref !== undefined ? sql`AND w.ref = ${f.ref}` : sql``}
      ${f.beforeId !== undefined ? sql`AND w.id < ${f.beforeId}` : sql``}
    ORDER BY w.id DESC LIMIT ${f.limit + 1}`.execute(db);
  const more = rows.length > f.limit;
  const page = (more ? rows.slice(0, f.limit) : rows).map(toWorkflow);
  return { workflows: page, nextBeforeId: more ? page[page.length - 1]!.id : null };
}
