import { readFile } from "node:fs/promises";
import type { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import type { z } from "zod";
import {
  FAILURE_POLICIES,
  KIND_PATTERN,
  KIND_RULE,
  STEP_NAME_PATTERN,
  STEP_NAME_RULE,
  UNIT_STATUSES,
  WORKFLOW_STATUSES,
  type DependencyRef,
  type enqueuedWorkflow,
  type FailurePolicy,
  type NewWorkflowInput,
  type workflowCancelResult,
  type WorkflowPage,
  type WorkflowWithSteps,
} from "@rtb/protocol";
import { ApiError, UnreachableError } from "../api-client.ts";
import { intArg, optionalInt, str, UsageError, type Command, type Context, type Values } from "../command.ts";
import { count, duration, timestamp } from "../format.ts";
import { paintStatus, table, visibleLength } from "../output.ts";
import { workflowHeader, workflowTree } from "../workflow-tree.ts";
import { EXIT_FINISHED_WITH_ERRORS } from "./go.ts";

type EnqueuedWorkflow = z.output<typeof enqueuedWorkflow>;
type WorkflowCancelResult = z.output<typeof workflowCancelResult>;

export const workflows: Command = {
  name: "workflows",
  summary: "list workflows, newest first: their status and their steps per status",
  usage: "rtb workflows [--status S[,S...]] [--name N] [--ref R] [--limit N] [--after CURSOR] [--json]",
  help: [
    `  -s, --status S   only these statuses, comma-separated (${WORKFLOW_STATUSES.join(", ")})`,
    "  --name N         only workflows of this name",
    "  --ref R          the workflow enqueued with this ref (exactly), if any",
    "  -n, --limit N    workflows per page (1 to 1000, default 50)",
    "  --after CURSOR   the page after this cursor (printed under a page that has more)",
    "  --json           GET /workflows exactly as the api answers it",
    "",
    "A column per step status that some workflow of the page has steps in. rtb workflow <id>",
    "draws one of them as a tree.",
  ].join("\n"),
  options: {
    status: { type: "string", short: "s", multiple: true },
    name: { type: "string" },
    ref: { type: "string" },
    limit: { type: "string", short: "n", default: "50" },
    after: { type: "string" },
  },
  positionals: { min: 0, max: 0 },
  async run(ctx, values) {
    const statuses = ((values.status as string[] | undefined) ?? []).flatMap((s) => s.split(",")).map((s) => s.trim()).filter(Boolean);
    for (const s of statuses) {
      if (!(WORKFLOW_STATUSES as readonly string[]).includes(s)) throw new UsageError(`--status: ${JSON.stringify(s)} is not a workflow status (${WORKFLOW_STATUSES.join(", ")})`);
    }
    const name = str(values.name);
    if (name !== undefined && !KIND_PATTERN.test(name)) throw new UsageError(`--name: expected ${KIND_RULE}, got ${JSON.stringify(name)}`);
    const page = await ctx.api().get<WorkflowPage>("/workflows", {
      status: statuses.length ? statuses.join(",") : undefined,
      name,
      ref: str(values.ref),
      limit: intArg(values.limit, "--limit", { min: 1, max: 1000 }),
      after: str(values.after),
    });
    if (ctx.json) return ctx.out.json(page);
    const { out } = ctx;
    if (page.workflows.length === 0) return out.line("no workflows match");
    // One column per step status in use on this page, in the protocol's order (blocked first).
    const used = UNIT_STATUSES.filter((s) => page.workflows.some((w) => (w.counts[s] ?? 0) > 0));
    table(
      out,
      [
        { header: "id", align: "right" },
        { header: "name" },
        { header: "ref" },
        { header: "status" },
        { header: "steps", align: "right" },
        ...used.map((s) => ({ header: s, align: "right" as const })),
        { header: "created" },
        { header: "finished" },
      ],
      page.workflows.map((w) => [
        String(w.id),
        w.name,
        w.ref ?? "-",
        paintStatus(out, w.status),
        count(Object.values(w.counts).reduce<number>((a, b) => a + (b ?? 0), 0)),
        ...used.map((s) => (w.counts[s] ? count(w.counts[s]) : out.paint("0", "dim"))),
        timestamp(w.createdAt),
        timestamp(w.finishedAt),
      ]),
    );
    if (page.nextCursor) out.line(out.paint(`more: add --after ${page.nextCursor}`, "dim"));
  },
};

/** The flags that say what a workflow is: only `enqueue` takes them. */
const ENQUEUE_FLAGS = ["file", "name", "ref", "on-failure", "group", "priority", "step"] as const;
/** The flags of watching one: only `rtb workflow <id>` takes them. */
const WATCH_FLAGS = ["watch", "interval", "timeout"] as const;

export const workflow: Command = {
  name: "workflow",
  summary: "enqueue a workflow (a DAG of steps), draw one as a tree (--watch: until it ends), or cancel one",
  usage: [
    "rtb workflow <id> [--watch [--interval MS] [--timeout S]] [--all] [--json]",
    "       rtb workflow enqueue --file PATH|- [--name N] [--ref R] [--on-failure cancel|fail|ignore] [--group G] [--priority P] [--all] [--json]",
    "       rtb workflow enqueue --name N --step SPEC [--step SPEC ...] [the same flags]",
    "       rtb workflow cancel <id> [--json]",
  ].join("\n"),
  help: [
    "  <id>, show <id>    the workflow as a tree: the steps without dependencies first, each",
    "                     step's dependents indented under it, each line with the step's status,",
    "                     unit id, attempt, and what it waits for or why it closed. A step that",
    "                     waits for several appears under each: in full once, then `name (see above)`.",
    "                     A mark before a step is the policy of the edge it hangs from:",
    "                     `~` ignore (it runs whatever that dependency ends as), `!` fail.",
    `                     More than 20 steps under one parent are one line with their counts`,
    "                     per status (what waits for them hangs under it).",
    "  --all              every step of a big fan-out, one line each",
    "  -w, --watch        draw it again as it changes (in place on a terminal; into a pipe,",
    "                     again each time it changed) until the workflow is no longer running;",
    "                     exit 0 if it ended in success, 3 in error or cancelled",
    "  --interval MS      with --watch: how often to ask (default 1000)",
    "  --timeout S        with --watch: give up after S seconds (exit 1)",
    "  --json             GET /workflows/<id> exactly as the api answers it (with --watch, once",
    "                     the workflow has ended)",
    "",
    "  enqueue            POST /workflows, then the workflow's id and its tree",
    "  -f, --file PATH    the workflow as JSON, `-` for stdin: {name, ref?, onFailure?, group?,",
    "                     priority?, steps: [{step, kind, payload?, dependsOn?, group?, priority?,",
    '                     maxAttempts?}]}, dependsOn entries a step\'s name or {"step": name,',
    '                     "onFailure": "ignore"}; or just the steps array (with --name)',
    "  --name N           what the workflow is (order, render); replaces the file's",
    "  --ref R            an idempotency key: a ref that exists already creates nothing and",
    "                     answers that workflow; replaces the file's",
    "  --on-failure P     what a dependency ending in error or cancelled does to its dependents",
    "                     by default: cancel (the api's default), fail or ignore; replaces the file's",
    "  --group G, --priority P",
    "                     the steps' group and priority unless a step says; replace the file's",
    "  --step SPEC        a step, NAME[=KIND][@DEP,DEP...] (KIND defaults to NAME); a DEP",
    "                     written ~DEP is an ignore edge, !DEP a fail edge (quote it: '!DEP').",
    "                     Repeat it; the steps come after the file's. E.g.",
    "                     --step validate --step charge@validate --step reserve@validate",
    "                     --step ship@charge,~reserve --step notify@ship",
    "  --json             POST /workflows exactly as the api answers it",
    "",
    "  cancel <id>        cancel every step that has not finished (steps in flight: their agents",
    "                     are told); the workflow ends cancelled, or error if a step had failed",
    "",
    "The api checks the workflow whole (a cycle, an unknown step, a name used twice): its refusal",
    "names the field, and nothing is enqueued (exit 1). Needs RTB_API_TOKEN when the api has",
    "one (reading needs it only with RTB_API_TOKEN_READS).",
  ].join("\n"),
  options: {
    file: { type: "string", short: "f" },
    name: { type: "string" },
    ref: { type: "string" },
    "on-failure": { type: "string" },
    group: { type: "string" },
    priority: { type: "string" },
    step: { type: "string", multiple: true },
    watch: { type: "boolean", short: "w", default: false },
    interval: { type: "string" },
    timeout: { type: "string" },
    all: { type: "boolean", default: false },
  },
  positionals: { min: 1, max: 2 },
  async run(ctx, values, positionals) {
    const [first] = positionals;
    const action = first === "enqueue" || first === "cancel" || first === "show" ? first : "show";
    const args = action === "show" && first !== "show" ? positionals : positionals.slice(1);
    const given = (flags: readonly string[]) => flags.filter((f) => values[f] !== undefined && values[f] !== false);
    if (action !== "enqueue" && given(ENQUEUE_FLAGS).length > 0) throw new UsageError(`--${given(ENQUEUE_FLAGS)[0]} goes with rtb workflow enqueue`);
    if (action !== "show" && given(WATCH_FLAGS).length > 0) throw new UsageError(`--${given(WATCH_FLAGS)[0]} goes with rtb workflow <id>`);
    if (action === "cancel" && values.all) throw new UsageError("--all goes with rtb workflow <id> or enqueue");
    if (action === "enqueue") {
      if (args.length > 0) throw new UsageError(`enqueue takes no arguments, got ${JSON.stringify(args.join(" "))}`);
      return enqueueWorkflow(ctx, values);
    }
    if (args.length !== 1) throw new UsageError(`expected ${action === "cancel" ? "cancel <id>" : "<id>"}, got ${JSON.stringify(positionals.join(" "))}`);
    const id = intArg(args[0], "<id>", { min: 1 });
    if (action === "cancel") return cancelWorkflow(ctx, id);
    if (!values.watch) {
      if (values.interval !== undefined || values.timeout !== undefined) throw new UsageError("--interval and --timeout go with --watch");
      const wf = await ctx.api().get<WorkflowWithSteps>(`/workflows/${id}`);
      if (ctx.json) return ctx.out.json(wf);
      for (const line of view(ctx, wf, values.all === true)) ctx.out.line(line);
      return;
    }
    return watchWorkflow(ctx, id, {
      intervalMs: values.interval === undefined ? 1000 : intArg(values.interval, "--interval", { min: 50, max: 60_000 }),
      timeoutMs: values.timeout === undefined ? undefined : intArg(values.timeout, "--timeout", { min: 1 }) * 1000,
      all: values.all === true,
    });
  },
};

/** The header, a blank line, and the tree. */
function view({ out }: Context, wf: WorkflowWithSteps, all: boolean): string[] {
  const paint = (s: string) => paintStatus(out, s);
  return [...workflowHeader(wf, paint), "", ...workflowTree(wf, { all, paint })];
}

// ---- enqueue ----

/** Where each step of the request came from, for the api's `steps[i]` fields. */
type Sources = string[];

async function enqueueWorkflow(ctx: Context, values: Values): Promise<number | void> {
  const file = str(values.file);
  const specs = (values.step as string[] | undefined) ?? [];
  if (file === undefined && specs.length === 0) throw new UsageError("give --file PATH (or - for stdin) or one --step SPEC per step");
  let body: Partial<NewWorkflowInput> & { steps: NewWorkflowInput["steps"] } = { steps: [] };
  const sources: Sources = [];
  if (file !== undefined) {
    body = await readWorkflowFile(ctx.stdin, file);
    for (const _ of body.steps) sources.push(`in ${file === "-" ? "stdin" : file}`);
  }
  specs.forEach((spec, i) => {
    body.steps.push(parseStep(spec));
    sources.push(`of --step ${i + 1}`);
  });
  const name = str(values.name);
  if (name !== undefined) {
    if (!KIND_PATTERN.test(name)) throw new UsageError(`--name: expected ${KIND_RULE}, got ${JSON.stringify(name)}`);
    body.name = name;
  }
  if (body.name === undefined) throw new UsageError("give --name N: what the workflow is (order, render)");
  if (values.ref !== undefined) body.ref = str(values.ref);
  const onFailure = str(values["on-failure"]);
  if (onFailure !== undefined) {
    if (!(FAILURE_POLICIES as readonly string[]).includes(onFailure)) throw new UsageError(`--on-failure: expected ${FAILURE_POLICIES.join(", ")}, got ${JSON.stringify(onFailure)}`);
    body.onFailure = onFailure as FailurePolicy;
  }
  if (values.group !== undefined) body.group = str(values.group);
  const priority = optionalInt(values.priority, "--priority", { min: -1_000_000, max: 1_000_000 });
  if (priority !== undefined) body.priority = priority;

  let answer: EnqueuedWorkflow;
  try {
    answer = await ctx.api().post<EnqueuedWorkflow>("/workflows", body);
  } catch (err) {
    // The api's refusal as it said it, with the step its field points at.
    if (!(err instanceof ApiError)) throw err;
    ctx.out.note(`rtb workflow: ${err.message}${describeField(err.body.field, body.steps, sources)}`);
    return 1;
  }
  if (ctx.json) return ctx.out.json(answer);
  const wf = answer.workflow;
  const ref = wf.ref === null ? "" : ` (ref ${wf.ref})`;
  const { out } = ctx;
  const n = wf.steps.length;
  out.line(
    answer.created
      ? `created workflow ${wf.id}${ref}: ${wf.name}, ${count(n)} step${n === 1 ? "" : "s"}`
      : `workflow ${wf.id}${ref} already exists: ${paintStatus(out, wf.status)}; nothing created`,
  );
  out.line();
  for (const line of workflowTree(wf, { all: values.all === true, paint: (s) => paintStatus(out, s) })) out.line(line);
}

/** ` (field: steps[1].dependsOn[0], step "b" in order.json)` */
function describeField(field: string | undefined, steps: NewWorkflowInput["steps"], sources: Sources): string {
  if (!field) return "";
  const m = /^steps\[(\d+)\]/.exec(field);
  const i = m ? Number(m[1]) : -1;
  const step = steps[i] as { step?: unknown } | undefined;
  const which = step ? `, ${typeof step.step === "string" ? `step ${JSON.stringify(step.step)}` : `the step`} ${sources[i]}` : "";
  return ` (field: ${field}${which})`;
}

/** A workflow document, or just its steps. Unreadable is bad usage (exit 2); unparsable, bad input (exit 1). */
async function readWorkflowFile(stdin: Readable, file: string): Promise<Partial<NewWorkflowInput> & { steps: NewWorkflowInput["steps"] }> {
  let text: string;
  if (file === "-") {
    text = "";
    stdin.setEncoding("utf8");
    for await (const chunk of stdin) text += chunk as string;
  } else {
    text = await readFile(file, "utf8").catch((err: Error) => {
      throw new UsageError(`--file ${file}: ${err.message}`);
    });
  }
  const where = file === "-" ? "stdin" : file;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new Error(`${where}: not valid JSON (${(err as Error).message})`);
  }
  if (Array.isArray(parsed)) return { steps: parsed as NewWorkflowInput["steps"] };
  if (typeof parsed !== "object" || parsed === null) throw new Error(`${where}: expected a workflow ({"name": ..., "steps": [...]}) or an array of steps, got ${JSON.stringify(parsed).slice(0, 60)}`);
  const doc = parsed as Partial<NewWorkflowInput>;
  // The api names what else is wrong; a missing steps array is only ours to fill (with --step).
  if (doc.steps !== undefined && !Array.isArray(doc.steps)) throw new Error(`${where}: "steps" must be an array of steps`);
  return { ...doc, steps: doc.steps ?? [] };
}

/** `ship=ship@charge,~reserve`: a step named ship, of kind ship, after charge and (ignore) reserve. */
export function parseStep(spec: string): NewWorkflowInput["steps"][number] {
  const m = /^([^=@]*)(?:=([^@]*))?(?:@(.*))?$/.exec(spec);
  const bad = (why: string) => new UsageError(`--step ${JSON.stringify(spec)}: ${why} (NAME[=KIND][@DEP,DEP...], e.g. ship=ship@charge,~reserve)`);
  if (!m) throw bad("cannot read it");
  const [, name = "", kind = name, deps] = m;
  if (!STEP_NAME_PATTERN.test(name)) throw bad(`NAME: expected ${STEP_NAME_RULE}`);
  if (!KIND_PATTERN.test(kind)) throw bad(`KIND: expected ${KIND_RULE}`);
  const dependsOn: DependencyRef[] = [];
  for (const raw of deps === undefined ? [] : deps.split(",")) {
    const d = raw.trim();
    const policy: FailurePolicy | undefined = d.startsWith("~") ? "ignore" : d.startsWith("!") ? "fail" : undefined;
    const dep = policy ? d.slice(1) : d;
    if (!STEP_NAME_PATTERN.test(dep)) throw bad(`DEP ${JSON.stringify(raw)}: expected a step's name, ~name or !name`);
    dependsOn.push(policy ? { step: dep, onFailure: policy } : dep);
  }
  return { step: name, kind, ...(dependsOn.length ? { dependsOn } : {}) };
}

// ---- cancel ----

async function cancelWorkflow(ctx: Context, id: number): Promise<void> {
  const answer = await ctx.api().post<WorkflowCancelResult>(`/workflows/${id}/cancel`);
  if (ctx.json) return ctx.out.json(answer);
  const { out } = ctx;
  const status = paintStatus(out, answer.workflow.status);
  if (answer.cancelled === 0) return out.line(`workflow ${id} is ${status}: no step was left to cancel`);
  const n = answer.cancelled;
  out.line(`workflow ${id}: ${count(n)} step${n === 1 ? "" : "s"} cancelled (${count(answer.inFlight)} in flight: their agents were told); the workflow is ${status}`);
}

// ---- watch ----

const PLAIN_NOTE_EVERY_MS = 5_000;

/** Poll GET /workflows/<id>, drawing the tree each time it changed, until the workflow ends. */
async function watchWorkflow(ctx: Context, id: number, opts: { intervalMs: number; timeoutMs: number | undefined; all: boolean }): Promise<number> {
  const { out } = ctx;
  const tty = out.stdout.isTTY === true && !ctx.json;
  const started = Date.now();
  let wf: WorkflowWithSteps | null = null;
  let drawnRows = 0;
  let lastTree = "";
  let lastNoteAt = -Infinity;

  const draw = (lines: string[], footer: string | null) => {
    if (ctx.json) return;
    const tree = lines.join("\n");
    if (!tty) {
      // Into a pipe or a file: a new frame only when something changed, a blank line between.
      if (tree === lastTree) return;
      out.stdout.write(`${lastTree === "" ? "" : "\n"}${tree}\n`);
      lastTree = tree;
      return;
    }
    const columns = out.stdout.columns || 80;
    const rows = out.stdout.rows || 24;
    // The footer on one row whatever the width, so that it alone can be drawn again.
    const foot = footer === null ? null : out.paint(footer.length < columns ? footer : `${footer.slice(0, columns - 2)}…`, "dim");
    if (tree === lastTree && drawnRows > 0 && foot !== null) {
      out.stdout.write(`\r\x1b[1A\x1b[2K${foot}\n`);
      return;
    }
    const frame = foot === null ? lines : [...lines, "", foot];
    // Back over the last frame and clear it; one taller than the screen is gone from reach, so clear the screen.
    const erase = drawnRows === 0 ? "" : drawnRows < rows ? `\r\x1b[${drawnRows}A\x1b[J` : "\x1b[H\x1b[2J\x1b[3J";
    out.stdout.write(`${erase}${frame.join("\n")}\n`);
    drawnRows = frame.reduce((n, l) => n + Math.max(1, Math.ceil(visibleLength(l) / columns)), 0);
    lastTree = tree;
  };
  const every = `every ${opts.intervalMs < 1000 ? `${opts.intervalMs} ms` : duration(opts.intervalMs)}`;

  for (;;) {
    let note = "";
    try {
      wf = await ctx.api().get<WorkflowWithSteps>(`/workflows/${id}`);
      if (wf.status !== "running") {
        draw(view(ctx, wf, opts.all), null);
        if (ctx.json) out.json(wf);
        if (wf.status === "success") return 0;
        const hint = wf.status === "error" ? "; rtb retry <unit id> runs a failed step again and re-opens the steps it closed" : "";
        out.note(`rtb workflow: workflow ${id} ended ${wf.status === "error" ? "in error" : "cancelled"} (exit ${EXIT_FINISHED_WITH_ERRORS}${hint})`);
        return EXIT_FINISHED_WITH_ERRORS;
      }
    } catch (err) {
      if (ctx.signal.aborted) return interrupted(ctx);
      // A restarting api or database is worth waiting for; a refusal (unknown id, bad token) is not.
      if (!(err instanceof UnreachableError || (err instanceof ApiError && err.status >= 500))) throw err;
      note = `no answer: ${err.message}; retrying`;
      if (!tty && Date.now() - lastNoteAt >= PLAIN_NOTE_EVERY_MS) {
        out.note(`rtb workflow: ${note}`);
        lastNoteAt = Date.now();
      }
    }
    if (wf) draw(view(ctx, wf, opts.all), `watching ${every}, ${timestamp(new Date().toISOString())}; Ctrl-C stops${note ? ` (${note})` : ""}`);
    if (opts.timeoutMs !== undefined && Date.now() - started >= opts.timeoutMs) {
      out.note(`rtb workflow: gave up after --timeout ${opts.timeoutMs / 1000} s; workflow ${id} is still running`);
      return 1;
    }
    try {
      await sleep(opts.intervalMs, undefined, { signal: ctx.signal });
    } catch {
      return interrupted(ctx);
    }
  }
}

function interrupted(ctx: Context): number {
  ctx.out.note("stopped watching (Ctrl-C); the workflow goes on (rtb workflow cancel <id> stops it)");
  return 130;
}
