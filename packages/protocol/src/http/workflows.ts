import { z } from "zod";
import { FAILURE_POLICIES, MAX_WORKFLOW_STEPS, dagProblem, failurePolicy, stepFields } from "../workflows.ts";
import { UNIT_STATUSES, type UnitStatus } from "../statuses.ts";
import { kindSchema } from "../names.ts";
import { CURSOR_PATTERN, groupName, intParam, unitRef } from "./fields.ts";
import { unitStatus } from "./responses.ts";

/** What /workflows takes and answers (services/api/src/http/workflow-routes.ts). */

export const WORKFLOW_STATUSES = ["running", "success", "error", "cancelled"] as const;
export type WorkflowStatusName = (typeof WORKFLOW_STATUSES)[number];

/** POST /workflows: a DAG of steps, enqueued atomically. */
export function workflowSchemas(limits: { maxAttempts: number }) {
  const step = z.strictObject(stepFields(limits.maxAttempts)).describe("A step: a unit, named in its workflow, with the steps it waits for.");
  const create = z
    .strictObject({
      name: kindSchema.describe("What the workflow is (order, render): GET /workflows?name= lists them."),
      ref: unitRef.optional().describe("Your idempotency key: POST the same ref again and you get the existing workflow back, never a second one."),
      onFailure: failurePolicy.default("cancel"),
      group: groupName.default("default").describe("The steps' group unless a step says otherwise: dispatch shares fairly across groups."),
      priority: z.number().int().min(-1_000_000).max(1_000_000).default(0).describe("The steps' priority unless a step says otherwise. Higher first."),
      steps: z
        .array(step)
        .min(1, { message: "expected at least one step" })
        .max(MAX_WORKFLOW_STEPS, { message: `expected at most ${MAX_WORKFLOW_STEPS} steps per workflow` })
        .describe(`Up to ${MAX_WORKFLOW_STEPS} steps; those without dependencies are ready at once.`),
    })
    .superRefine((w, ctx) => {
      const problem = dagProblem(w.steps);
      if (problem) ctx.addIssue({ code: "custom", path: ["steps", ...problem.path], message: problem.message });
    })
    .describe("A workflow to enqueue.");
  return { create };
}
export type NewWorkflowInput = z.input<ReturnType<typeof workflowSchemas>["create"]>;
export type ParsedNewWorkflow = z.output<ReturnType<typeof workflowSchemas>["create"]>;

const workflowStatusList = z
  .string()
  .transform((v, ctx) => {
    const wanted = v.split(",").map((s) => s.trim()).filter(Boolean);
    const unknown = wanted.filter((s) => !(WORKFLOW_STATUSES as readonly string[]).includes(s));
    if (unknown.length > 0 || wanted.length === 0) {
      ctx.addIssue({ code: "custom", message: `unknown status '${unknown[0] ?? v}'; expected one or more of ${WORKFLOW_STATUSES.join(", ")}, comma-separated` });
      return z.NEVER;
    }
    return wanted as WorkflowStatusName[];
  })
  .describe(`Comma-separated: ${WORKFLOW_STATUSES.join(", ")}.`);

export const listWorkflowsQuery = z.strictObject({
  status: workflowStatusList.optional(),
  name: kindSchema.optional().describe("Only workflows of this name."),
  ref: unitRef.optional().describe("Exactly this ref: the one workflow enqueued with it, or an empty page."),
  limit: intParam({ min: 1, max: 1000, defaultValue: 50 }).describe("Workflows per page, 1 to 1000 (default 50)."),
  after: intParam({ min: 1, max: Number.MAX_SAFE_INTEGER, cursor: true }).optional().describe("The nextCursor of the previous page."),
});

export const workflowIdParam = z.object({ id: intParam({ min: 1, max: Number.MAX_SAFE_INTEGER }).describe("The workflow's id.") });

const time = z.iso.datetime();
const count = z.number().int().min(0);
const id = z.number().int().min(1);

export const workflowStatus = z.enum(WORKFLOW_STATUSES).describe("running while a step is not finished; then success (every step succeeded), error (a step ended in error) or cancelled.");

export const workflowView = z
  .object({
    id: id.describe("The workflow's id."),
    name: z.string().describe("What the workflow is, as enqueued (order, render)."),
    ref: z.string().nullable().describe("The producer's idempotency key; null when none was given."),
    status: workflowStatus,
    onFailure: z.enum(FAILURE_POLICIES).describe("The policy of its edges that do not name one."),
    counts: z
      .object(Object.fromEntries(UNIT_STATUSES.map((s) => [s, count.optional().describe(`Steps ${s} now.`)])) as Record<UnitStatus, z.ZodOptional<typeof count>>)
      .describe("Its steps per status (statuses with none left out)."),
    createdAt: time.describe("When it was enqueued."),
    updatedAt: time.describe("When its status last changed."),
    finishedAt: time.nullable().describe("When its last step finished; null while running."),
  })
  .describe("A workflow and where it is.");
export type WorkflowView = z.output<typeof workflowView>;

export const workflowStep = z
  .object({
    id: id.describe("The step's unit (GET /units/:id has its timeline)."),
    step: z.string().describe("Its name; a fan-out's children are named <parent>/<child>."),
    kind: z.string().describe("What the step is; agents consume by kind."),
    status: unitStatus,
    attempt: count.describe("Dispatches so far."),
    dependsOn: z
      .array(
        z.object({
          step: z.string().nullable().describe("The dependency's step name."),
          unitId: id.describe("The dependency's unit."),
          onFailure: z.enum(FAILURE_POLICIES).describe("What the dependency ending in error or cancelled does to this step."),
          satisfied: z.boolean().describe("true: it no longer holds this step back."),
        }),
      )
      .describe("The edges this step waits for."),
    waitingOn: count.nullable().describe("Blocked: the dependencies not yet satisfied."),
    result: z.unknown().describe("What its handler reported with success; null otherwise."),
    lastError: z.string().nullable().describe("The last error reported, or why a failed dependency closed it."),
    closedBy: id.nullable().describe("The failed dependency that cancelled or failed this step; retrying that one re-opens it."),
    updatedAt: time.describe("When its row last changed."),
  })
  .describe("One step of a workflow, with its edges.");

export const workflowWithSteps = z
  .intersection(workflowView, z.object({ steps: z.array(workflowStep).describe("Every step, in the order they were enqueued.") }))
  .describe("A workflow with its steps and edges: the DAG.");
export type WorkflowWithSteps = z.output<typeof workflowWithSteps>;

export const enqueuedWorkflow = z
  .object({ created: z.boolean().describe("false: the ref existed; this is that workflow."), workflow: workflowWithSteps })
  .describe("A workflow enqueued, or found by its ref.");

export const workflowPage = z
  .object({
    workflows: z.array(workflowView).describe("Newest first."),
    nextCursor: z.string().regex(CURSOR_PATTERN).nullable().describe("Pass as `after` for the next page; null on the last page."),
  })
  .describe("A page of workflows.");
export type WorkflowPage = z.output<typeof workflowPage>;

export const workflowCancelResult = z
  .object({
    cancelled: count.describe("Steps cancelled by this request."),
    inFlight: count.describe("Of those, steps that were dispatched, queued or processing: the agents were told."),
    workflow: workflowView,
  })
  .describe("What cancelling a workflow did.");
