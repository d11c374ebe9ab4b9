import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import type { Context } from "hono";
import { cancelMatching, enqueueWorkflow, getWorkflow, listWorkflows } from "@rtb/db";
import {
  enqueuedWorkflow,
  errorBody,
  listWorkflowsQuery,
  MAX_WORKFLOW_STEPS,
  workflowCancelResult,
  workflowIdParam,
  workflowPage,
  workflowSchemas,
  workflowWithSteps,
  depStep,
} from "@rtb/protocol";
import type { AppDeps } from "./deps.ts";
import { CHANGE, json, routes, serve } from "./routes.ts";
import { committed } from "./committed.ts";
import { callerOf } from "./audit.ts";
import { payloadTooLarge } from "./payload-limit.ts";
import { enqueueSpan, inEnqueueSpan } from "./enqueue-trace.ts";

const tags = ["workflows"];
const invalid = { description: "A field is invalid (a cycle, an unknown step, too many steps): `field` names it. Nothing was written.", content: json(errorBody) };
const notFound = { description: "No workflow with this id.", content: json(errorBody) };

/**
 * /workflows: DAGs of steps enqueued atomically (db/src/workflows.ts), each step a unit that is
 * blocked until its dependencies are satisfied, and is handed their results when dispatched.
 */
export function workflowRoutes(deps: AppDeps): OpenAPIHono {
  const { db, dispatcher, settings, cancels } = deps;
  const { create } = workflowSchemas(settings);
  const app = routes();

  const enqueue = createRoute({
    method: "post",
    path: "/",
    tags,
    security: CHANGE,
    summary: "Enqueue a workflow: a DAG of named steps, all or nothing",
    description:
      `Up to ${MAX_WORKFLOW_STEPS} steps, each a unit with a local name and the steps it depends on (\`dependsOn\`), in one transaction. ` +
      "Steps without dependencies are ready at once; the others are `blocked` until each dependency succeeded (or, for an edge whose " +
      "onFailure is ignore, ended), and are dispatched with their results by step name. A dependency ending in error or cancelled " +
      "cancels (default) or fails its dependents. Cycles, unknown steps, a name used twice and oversize workflows are a 400 naming the field. " +
      "The same `ref` again returns the existing workflow.",
    request: { body: { required: true, content: json(create) } },
    responses: {
      200: { description: "A workflow with this ref existed: that workflow (created: false).", content: json(enqueuedWorkflow) },
      201: { description: "Created, with its steps.", content: json(enqueuedWorkflow) },
      400: invalid,
      413: { description: "The body is larger than RTB_API_MAX_BODY_BYTES, or a step's payload larger than one broker message can carry (field `steps[i].payload`).", content: json(errorBody) },
      415: { description: "The body is not application/json (UTF-8).", content: json(errorBody) },
    },
  });
  serve(app, enqueue, async (c) => {
    const body = c.req.valid("json");
    const tooLarge = payloadTooLarge(body.steps.map((s) => s.payload), settings.maxPayloadBytes, (i) => `steps[${i}].payload`);
    if (tooLarge) return c.json(tooLarge, 413);
    let created = false;
    const span = enqueueSpan(deps.tracing, c, "/workflows");
    const traceparent = span.traceparent ?? null;
    const res = await inEnqueueSpan(span, () => committed(db, async (tx) => {
      const wf = await enqueueWorkflow(tx, {
        name: body.name,
        ref: body.ref ?? null,
        onFailure: body.onFailure,
        steps: body.steps.map((s) => ({
          step: s.step,
          unit: { kind: s.kind, group: s.group ?? body.group, priority: s.priority ?? body.priority, payload: s.payload, ref: null, maxAttempts: s.maxAttempts, delayMs: s.delayMs ?? null, traceparent },
          dependsOn: s.dependsOn.map((d) => (typeof d === "string" ? { step: d } : { step: depStep(d), onFailure: d.onFailure })),
        })),
      });
      created = wf.created;
      span.set({ "rtb.workflow.id": wf.id, "rtb.units": body.steps.length });
      const workflow = (await getWorkflow(tx, wf.id))!;
      return created ? c.json({ created: true, workflow }, 201) : c.json({ created: false, workflow }, 200);
    }));
    if (created) dispatcher.trigger("workflow enqueued");
    return res;
  });

  const list = createRoute({
    method: "get",
    path: "/",
    tags,
    summary: "List workflows, newest first, with filters and keyset pagination",
    request: { query: listWorkflowsQuery },
    responses: { 200: { description: "A page of workflows, each with its steps counted per status.", content: json(workflowPage) }, 400: invalid },
  });
  serve(app, list, async (c) => {
    const q = c.req.valid("query");
    const page = await listWorkflows(db, { statuses: q.status, name: q.name, ref: q.ref, beforeId: q.after, limit: q.limit });
    return c.json({ workflows: page.workflows, nextCursor: page.nextBeforeId === null ? null : String(page.nextBeforeId) }, 200);
  });

  const show = createRoute({
    method: "get",
    path: "/{id}",
    tags,
    summary: "One workflow with every step, its status and its edges",
    request: { params: workflowIdParam },
    responses: { 200: { description: "The workflow and its DAG.", content: json(workflowWithSteps) }, 400: invalid, 404: notFound },
  });
  serve(app, show, async (c) => {
    const { id } = c.req.valid("param");
    const wf = await getWorkflow(db, id);
    if (!wf) return unknownWorkflow(c, id);
    return c.json(wf, 200);
  });

  const cancel = createRoute({
    method: "post",
    path: "/{id}/cancel",
    tags,
    security: CHANGE,
    summary: "Cancel a workflow: every step not finished is cancelled",
    description: "As POST /units/cancel for its steps: in batches, steps in flight announced to the agents. The workflow ends cancelled (or error, if a step had ended in error).",
    request: { params: workflowIdParam },
    responses: { 200: { description: "What was cancelled, and the workflow as it is now.", content: json(workflowCancelResult) }, 400: invalid, 404: notFound },
  });
  serve(app, cancel, async (c) => {
    const { id } = c.req.valid("param");
    if (!(await getWorkflow(db, id))) return unknownWorkflow(c, id);
    const totals = await cancelMatching(db, { workflowId: id }, callerOf(c), {
      onBatch: async (units) => void (await cancels.announce(units, "workflow cancelled")),
    });
    if (totals.inFlight > 0) dispatcher.trigger("workflow cancelled");
    const { steps: _, ...workflow } = (await getWorkflow(db, id))!;
    return c.json({ ...totals, workflow }, 200);
  });

  return app;
}

const unknownWorkflow = (c: Context, id: number) => c.json({ error: "not_found", field: "id", message: `no workflow with id ${id}` }, 404);
