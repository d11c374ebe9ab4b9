import { UNIT_STATUSES, type FailurePolicy, type WorkflowView, type WorkflowWithSteps } from "@rtb/protocol";
import { count, duration, oneLine, timestamp } from "./format.ts";
import { visibleLength } from "./output.ts";

/**
 * A workflow's DAG drawn as a tree for a terminal: the roots first, each step's dependents
 * indented under it. A step with several dependencies appears under each of them: in full the
 * first time, as `name (see above)` after. An edge's failure policy marks the dependent when it
 * is not cancel (`~` ignore, `!` fail). A fan-out's children (`<parent>/<child>`) that wait for
 * nothing hang under the step that spawned them. More than COLLAPSE_OVER dependents of one
 * step (or children it spawned) become one line with their counts per status (unless `all`),
 * and what depends on them hangs under that line. Pure: the colors come in as a function, so
 * the text is tested as is.
 */
type Step = WorkflowWithSteps["steps"][number];

export interface TreeOptions {
  /** Every child, however many. */
  all?: boolean;
  /** A step or workflow status in its color (output.ts, paintStatus). */
  paint?: (status: string) => string;
}

/** The most children of one parent drawn one by one; more become a summary line. */
export const COLLAPSE_OVER = 20;

/** What a dependent's line starts with, by the policy of the edge it hangs from. */
export const EDGE_MARKS: Record<FailurePolicy, string> = { cancel: "", ignore: "~", fail: "!" };
const LEGEND: Record<string, string> = {
  "~": "~ ignore edge: runs whatever the step above ends as",
  "!": "! fail edge: ends in error if the step above fails",
};

/** The name column stops growing here (a deep chain); longer names push their own line only. */
const MAX_NAME_COLUMN = 60;
/** Indentation stops growing here: a chain of 10,000 steps would be 30,000 columns deep. */
const MAX_DEPTH = 16;
/** A blocked step lists this many of the steps it waits for, then `and N more`. */
const WAITING_NAMES = 3;

interface Edge {
  to: number;
  /** null: a root, or a fan-out's child under the step that spawned it (no edge between them). */
  policy: FailurePolicy | null;
  /** A fan-out's child under its spawner: such children collapse apart from the spawner's dependents. */
  spawned?: true;
}

/** The steps as a forest: the children of each step (by index), and the roots. */
function forest(steps: readonly Step[]): { roots: Edge[]; children: Edge[][] } {
  const index = new Map(steps.map((s, i) => [s.id, i]));
  const byName = new Map(steps.map((s, i) => [s.step, i]));
  const children = steps.map((): Edge[] => []);
  const roots: Edge[] = [];
  steps.forEach((s, i) => {
    let parents = 0;
    for (const d of s.dependsOn) {
      const from = index.get(d.unitId);
      if (from === undefined) continue; // a unit outside this workflow
      children[from]!.push({ to: i, policy: d.onFailure });
      parents++;
    }
    // A fan-out's children (`<parent>/<child>`) that wait for nothing hang under their spawner.
    const slash = s.step.lastIndexOf("/");
    const spawner = parents === 0 && slash > 0 ? byName.get(s.step.slice(0, slash)) : undefined;
    if (spawner !== undefined && spawner !== i) children[spawner]!.push({ to: i, policy: null, spawned: true });
    else if (parents === 0) roots.push({ to: i, policy: null });
  });
  return { roots, children };
}

/** `2 blocked, 1 pending, 3 success`: the statuses with steps, in the protocol's order. */
export function statusCounts(counts: Partial<Record<string, number>>, paint: (s: string) => string = (s) => s): string {
  const parts = UNIT_STATUSES.filter((s) => (counts[s] ?? 0) > 0).map((s) => `${count(counts[s]!)} ${paint(s)}`);
  return parts.length ? parts.join(", ") : "none";
}

/** The two lines above the tree: what the workflow is and where it stands. */
export function workflowHeader(wf: WorkflowView, paint: (s: string) => string = (s) => s): string[] {
  const ref = wf.ref === null ? "" : ` (ref ${wf.ref})`;
  const when =
    wf.finishedAt === null
      ? `since ${timestamp(wf.createdAt)}`
      : `finished ${timestamp(wf.finishedAt)}, after ${duration(Date.parse(wf.finishedAt) - Date.parse(wf.createdAt))}`;
  const total = Object.values(wf.counts).reduce<number>((a, b) => a + (b ?? 0), 0);
  return [
    `workflow ${wf.id} ${wf.name}${ref}: ${paint(wf.status)}, ${when}`,
    `${count(total)} step${total === 1 ? "" : "s"}: ${statusCounts(wf.counts, paint)}`,
  ];
}

/** Why a step is where it is: what it waits for, or why it was closed, or its last error. */
function reason(s: Step, steps: readonly Step[], index: Map<number, number>): string {
  if (s.status === "blocked") {
    const open = s.dependsOn.filter((d) => !d.satisfied).map((d) => d.step ?? `unit ${d.unitId}`);
    if (open.length === 0) return "";
    const shown = open.slice(0, WAITING_NAMES).join(", ");
    return `waiting for ${shown}${open.length > WAITING_NAMES ? ` and ${count(open.length - WAITING_NAMES)} more` : ""}`;
  }
  if (s.lastError !== null) return oneLine(s.lastError, 100);
  if (s.closedBy !== null) {
    const by = index.get(s.closedBy);
    return `closed by ${by === undefined ? `unit ${s.closedBy}` : `${steps[by]!.step} (unit ${s.closedBy})`}`;
  }
  return "";
}

type Item =
  | { kind: "step"; at: number; mark: string; prefix: string; last: boolean; depth: number }
  | { kind: "group"; members: number[]; mark: string; prefix: string; last: boolean; depth: number };

interface Row {
  /** The tree's drawing, the mark and the name. */
  left: string;
  /** status, unit, attempt, reason; none for a back-reference or a summary line. */
  cells?: string[];
}

/** The tree's lines (and a legend of the marks used), ready to print. */
export function workflowTree(wf: WorkflowWithSteps, opts: TreeOptions = {}): string[] {
  const paint = opts.paint ?? ((s: string) => s);
  const { steps } = wf;
  const { roots, children } = forest(steps);
  const index = new Map(steps.map((s, i) => [s.id, i]));
  const shown = new Set<number>();
  const marks = new Set<string>();
  const rows: Row[] = [];
  const markOf = (policy: FailurePolicy | null) => (policy === null ? "" : EDGE_MARKS[policy]);

  // Depth first with a stack of its own: a chain of 10,000 steps is 10,000 levels deep.
  const stack: Item[] = [];
  /**
   * Push a parent's children so that they pop in order: its dependents, then the steps it
   * spawned; each of the two, when there are more than COLLAPSE_OVER, as one summary line.
   */
  const pushChildren = (edges: Edge[], prefix: string, depth: number) => {
    const items: Item[] = [];
    for (const part of [edges.filter((e) => !e.spawned), edges.filter((e) => e.spawned)]) {
      if (part.length > COLLAPSE_OVER && !opts.all) {
        const policies = new Set(part.map((e) => markOf(e.policy)));
        items.push({ kind: "group", members: part.map((e) => e.to), mark: policies.size === 1 ? [...policies][0]! : "", prefix, last: false, depth });
      } else {
        for (const e of part) items.push({ kind: "step", at: e.to, mark: markOf(e.policy), prefix, last: false, depth });
      }
    }
    if (items.length > 0) items[items.length - 1]!.last = true;
    for (let k = items.length - 1; k >= 0; k--) stack.push(items[k]!);
  };
  pushChildren(roots, "", 0);

  while (stack.length > 0) {
    const item = stack.pop()!;
    const { depth } = item;
    // Deeper than MAX_DEPTH, the indentation stops growing and the line says how deep it is.
    const branch = depth === 0 ? "" : `${item.prefix}${item.last ? "└─ " : "├─ "}${depth > MAX_DEPTH ? `[depth ${depth}] ` : ""}`;
    const below = depth === 0 ? "" : depth >= MAX_DEPTH ? item.prefix : `${item.prefix}${item.last ? "   " : "│  "}`;
    const mark = item.mark ? `${item.mark} ` : "";
    if (item.mark) marks.add(item.mark);

    if (item.kind === "group") {
      const members = item.members.map((i) => steps[i]!);
      const counts: Record<string, number> = {};
      for (const m of members) counts[m.status] = (counts[m.status] ?? 0) + 1;
      const range = `${members[0]!.step} … ${members.at(-1)!.step}`;
      rows.push({ left: `${branch}${mark}${count(members.length)} steps: ${statusCounts(counts, paint)} (${range}; --all lists each)` });
      // What waits for them hangs under the summary: each such step once, by the policy its edges share.
      const inGroup = new Set(item.members);
      const next = new Map<number, Set<FailurePolicy | null>>();
      for (const m of item.members) {
        for (const e of children[m]!) {
          if (inGroup.has(e.to)) continue;
          (next.get(e.to) ?? next.set(e.to, new Set()).get(e.to)!).add(e.policy);
        }
      }
      const edges = [...next].sort(([a], [b]) => a - b).map(([to, policies]): Edge => ({ to, policy: policies.size === 1 ? [...policies][0]! : null }));
      pushChildren(edges, below, depth + 1);
      continue;
    }

    const s = steps[item.at]!;
    if (shown.has(item.at)) {
      rows.push({ left: `${branch}${mark}${s.step} (see above)` });
      continue;
    }
    shown.add(item.at);
    rows.push({ left: `${branch}${mark}${s.step}`, cells: [paint(s.status), `unit ${s.id}`, `attempt ${s.attempt}`, reason(s, steps, index)] });
    pushChildren(children[item.at]!, below, depth + 1);
  }

  // Columns: every full line's cells aligned; back-references and summaries are as long as they are.
  const full = rows.filter((r) => r.cells);
  const nameWidth = Math.min(MAX_NAME_COLUMN, Math.max(0, ...full.map((r) => visibleLength(r.left))));
  const widths = [0, 1, 2].map((c) => Math.max(0, ...full.map((r) => visibleLength(r.cells![c]!))));
  const pad = (s: string, w: number) => s + " ".repeat(Math.max(0, w - visibleLength(s)));
  const lines = rows.map((r) => (r.cells ? [pad(r.left, nameWidth), ...r.cells.map((c, i) => (i < 3 ? pad(c, widths[i]!) : c))].join("  ").trimEnd() : r.left));
  const legend = [...marks].sort().map((m) => LEGEND[m]!);
  return legend.length ? [...lines, "", ...legend] : lines;
}
