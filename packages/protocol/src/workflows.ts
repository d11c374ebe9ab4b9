import { z } from "zod";
import { kindSchema } from "./names.ts";
import { groupName } from "./http/fields.ts";

/**
 * Workflows: DAGs of steps, named locally, each step a unit that waits for the steps it
 * depends on (docs/architecture.md, "Workflows"). The shapes here are shared by POST /workflows
 * and by a handler's fan-out (a success report's `spawn`), and so is their check (dagProblem).
 */

/** What a dependency that ends in error (or is cancelled) does to the step waiting for it. */
export const FAILURE_POLICIES = ["cancel", "fail", "ignore"] as const;
export type FailurePolicy = (typeof FAILURE_POLICIES)[number];
export const failurePolicy = z
  .enum(FAILURE_POLICIES, { message: "expected cancel, fail or ignore" })
  .describe("What a dependency ending in error or cancelled does to its dependents: cancel them, fail them (error), or ignore it (they run with what succeeded).");

/** The most steps one workflow request, or one fan-out, may hold. */
export const MAX_WORKFLOW_STEPS = 10_000;

/** A step's name in its workflow: a fan-out's children are named `<parent>/<child>`. */
export const STEP_NAME_PATTERN = /^[A-Za-z0-9_.:-]{1,100}$/;
export const STEP_NAME_RULE = "1 to 100 letters, digits, '_', '.', ':' or '-'";
/** A stored step name (a child's is its parents' joined with '/'). */
export const STORED_STEP_MAX_LENGTH = 200;
export const stepName = z.string().regex(STEP_NAME_PATTERN, { message: `expected ${STEP_NAME_RULE}` }).describe("The step's name in its workflow.");

/** One edge as written: a step's name, or the name with its own failure policy. */
export const dependencyRef = z.union([stepName, z.strictObject({ step: stepName, onFailure: failurePolicy })], {
  message: `expected a step's name, or {step, onFailure}`,
});
export type DependencyRef = z.infer<typeof dependencyRef>;

const dependsOn = z
  .array(dependencyRef)
  .max(MAX_WORKFLOW_STEPS, { message: `expected at most ${MAX_WORKFLOW_STEPS} dependencies` })
  .default([])
  .describe("The steps this one waits for, by name; an entry may carry its own onFailure.");

/** What a step is, besides its name and edges (the unit's fields; payload any JSON). */
export function stepFields<M extends number | undefined>(maxAttempts: M) {
  const attempts = z.number().int().min(1).max(1000);
  return {
    step: stepName,
    kind: kindSchema.describe("The step's unit kind."),
    group: groupName.optional().describe("Default: the workflow's group (a fan-out's: its parent's)."),
    priority: z.number().int().min(-1_000_000).max(1_000_000).optional().describe("Higher first. Default: the workflow's priority."),
    payload: z.unknown().default({}).meta({ default: {} }).describe("Any JSON; handed to the agent with its dependencies' results."),
    // Optional in a fan-out (the api fills in RTB_MAX_ATTEMPTS), defaulted in a request.
    maxAttempts: (maxAttempts === undefined ? attempts.optional().describe("Attempts at most (1..1000). Default: RTB_MAX_ATTEMPTS.") : attempts.default(maxAttempts).describe("Attempts at most (1..1000).")) as M extends number ? z.ZodDefault<typeof attempts> : z.ZodOptional<typeof attempts>,
    
    delayMs: z.number().int().min(0).max(366 * 24 * 60 * 60 * 1000).optional().describe("Not before this many milliseconds after it is enqueued (a blocked step: after that, and once its dependencies are satisfied); at most 366 days."),
    dependsOn,
  };
}

/** A fan-out: new steps a handler returns with its success, and an optional join that waits for them all. */
function spawnSchema() {
  const child = z.strictObject(stepFields(undefined));
  const { dependsOn: _, ...joinFields } = stepFields(undefined);
  const join = z.strictObject(joinFields);
  return z
    .strictObject({
      steps: z.array(child).min(1, { message: "expected at least one step" }).max(MAX_WORKFLOW_STEPS, { message: `expected at most ${MAX_WORKFLOW_STEPS} steps` }).describe("The new steps, named within the spawning step (a child's stored name is `<parent>/<child>`)."),
      join: join.optional().describe("A step that waits for every spawned step; the spawning step's dependents wait for it too."),
    })
    .superRefine((s, ctx) => {
      if (s.steps.length + (s.join ? 1 : 0) > MAX_WORKFLOW_STEPS) {
        ctx.addIssue({ code: "custom", path: ["steps"], message: `expected at most ${MAX_WORKFLOW_STEPS} steps with the join` });
        return;
      }
      const all = s.join ? [...s.steps, { ...s.join, dependsOn: [] }] : s.steps;
      const problem = dagProblem(all);
      if (!problem) return;
      // The join is the last of `all`: name it as the field it is.
      const [i, ...rest] = problem.path as [number, ...(string | number)[]];
      const path = i < s.steps.length ? ["steps", i, ...rest] : ["join", ...rest];
      ctx.addIssue({ code: "custom", path, message: problem.message });
    });
}
/** A success report's `spawn` (messages.ts): checked by the agent before it is sent, and by the api. */
export const SpawnSchema = spawnSchema();
export type Spawn = z.output<typeof SpawnSchema>;
export type SpawnInput = z.input<typeof SpawnSchema>;

export interface StepEdges {
  step: string;
  dependsOn: readonly DependencyRef[];
}

export const depStep = (d: DependencyRef): string => (typeof d === "string" ? d : d.step);

/**
 * What is wrong with a set of steps as a DAG, naming the field: a name used twice, a
 * dependency on an unknown step, on itself or twice on the same step, or a cycle (with its
 * path). null: none of these.
 */
export function dagProblem(steps: readonly StepEdges[], field = "steps"): { path: (string | number)[]; message: string } | null {
  const index = new Map<string, number>();
  for (const [i, s] of steps.entries()) {
    if (index.has(s.step)) return { path: [i, "step"], message: `step "${s.step}" is named twice (also ${field}[${index.get(s.step)}])` };
    index.set(s.step, i);
  }
  for (const [i, s] of steps.entries()) {
    const seen = new Set<string>();
    for (const [j, d] of s.dependsOn.entries()) {
      const name = depStep(d);
      if (!index.has(name)) return { path: [i, "dependsOn", j], message: `no step named "${name}" in this workflow` };
      if (name === s.step) return { path: [i, "dependsOn", j], message: `step "${name}" cannot depend on itself` };
      if (seen.has(name)) return { path: [i, "dependsOn", j], message: `"${name}" is listed twice` };
      seen.add(name);
    }
  }
  // Kahn's algorithm: what is left once every step without open dependencies is taken is on a cycle.
  const waiting = steps.map((s) => s.dependsOn.length);
  const dependents = steps.map(() => [] as number[]);
  steps.forEach((s, i) => s.dependsOn.forEach((d) => dependents[index.get(depStep(d))!]!.push(i)));
  const ready = waiting.flatMap((n, i) => (n === 0 ? [i] : []));
  for (let k = 0; k < ready.length; k++) for (const j of dependents[ready[k]!]!) if (--waiting[j]! === 0) ready.push(j);
  if (ready.length === steps.length) return null;
  // Walk back along open edges from a step on a cycle until a step repeats: that loop is the cycle.
  let at = waiting.findIndex((n) => n > 0);
  const path: number[] = [];
  const onPath = new Map<number, number>();
  while (!onPath.has(at)) {
    onPath.set(at, path.length);
    path.push(at);
    at = index.get(steps[at]!.dependsOn.map(depStep).find((d) => waiting[index.get(d)!]! > 0)!)!;
  }
  const cycle = path.slice(onPath.get(at)!);
  const names = [...cycle, cycle[0]!].map((i) => steps[i]!.step);
  return { path: [cycle[0]!, "dependsOn"], message: `cycle: ${names.join(" -> ")} (each step waits for the next)` };
}
