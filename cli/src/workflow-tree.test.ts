import { describe, expect, it } from "vitest";
import type { FailurePolicy, WorkflowWithSteps } from "@rtb/protocol";
import { parseStep } from "./commands/workflows.ts";
import { workflowTree } from "./workflow-tree.ts";

type Step = WorkflowWithSteps["steps"][number];
const AT = "2026-01-01T00:00:00.000Z";

/** A workflow of steps given as `name <- dep, ~dep` (ids in order from 1), every one pending. */
function wf(specs: [string, (string | [string, FailurePolicy])[]][], status: Partial<Record<string, Step["status"]>> = {}): WorkflowWithSteps {
  const ids = new Map(specs.map(([name], i) => [name, i + 1]));
  const steps: Step[] = specs.map(([name, deps], i) => ({
    id: i + 1,
    step: name,
    kind: "k",
    status: status[name] ?? (deps.length ? "blocked" : "pending"),
    attempt: 0,
    dependsOn: deps.map((d) => {
      const [dep, onFailure] = typeof d === "string" ? [d, "cancel" as const] : d;
      return { step: dep, unitId: ids.get(dep)!, onFailure, satisfied: false };
    }),
    waitingOn: deps.length || null,
    result: null,
    lastError: null,
    closedBy: null,
    updatedAt: AT,
  }));
  return { id: 1, name: "t", ref: null, status: "running", onFailure: "cancel", counts: {}, createdAt: AT, updatedAt: AT, finishedAt: null, steps };
}

/** The drawing and the names, without the columns. */
const names = (lines: string[]) => lines.map((l) => l.replace(/(\S) {2,}.*$/, "$1"));

describe("workflowTree", () => {
  it("draws each root's dependents under it, a step with two parents in full once and then as a back-reference", () => {
    const lines = workflowTree(wf([["a", []], ["b", ["a"]], ["x", []], ["c", ["b", ["x", "fail"]]]]));
    expect(names(lines)).toEqual(["a", "└─ b", "   └─ c", "x", "└─ ! c (see above)", "", "! fail edge: ends in error if the step above fails"]);
  });

  it("collapses more than 20 roots into one line, what waits for them under it, with the mark their edges share", () => {
    const roots = Array.from({ length: 21 }, (_, i): [string, []] => [`r${i}`, []]);
    const lines = workflowTree(wf([...roots, ["join", roots.map(([n]): [string, FailurePolicy] => [n, "ignore"])]]));
    expect(lines[0]).toBe("21 steps: 21 pending (r0 … r20; --all lists each)");
    expect(lines[1]).toMatch(/^└─ ~ join +blocked +unit 22 +attempt 0 +waiting for r0, r1, r2 and 18 more$/);
    // Edges of different policies: no mark.
    const mixed = workflowTree(wf([...roots, ["join", roots.map(([n], i): [string, FailurePolicy] => [n, i ? "ignore" : "cancel"])]]));
    expect(mixed[1]).toMatch(/^└─ join +blocked/);
    // Twenty are drawn one by one.
    expect(workflowTree(wf([...roots.slice(1), ["join", roots.slice(1).map(([n]) => n)]])).filter((l) => l.includes("join"))).toHaveLength(20);
  });

  it("draws a chain of 10,000 steps (deeper than any call stack), indented 16 levels at most, then saying how deep", () => {
    const chain = Array.from({ length: 10_000 }, (_, i): [string, string[]] => [`s${i}`, i ? [`s${i - 1}`] : []]);
    const lines = workflowTree(wf(chain));
    expect(lines).toHaveLength(10_000);
    const indent = (n: number) => " ".repeat(3 * n);
    expect(names(lines.slice(0, 3))).toEqual(["s0", "└─ s1", `${indent(1)}└─ s2`]);
    expect(names(lines.slice(15, 18))).toEqual([`${indent(14)}└─ s15`, `${indent(15)}└─ s16`, `${indent(15)}└─ [depth 17] s17`]);
    expect(names([lines.at(-1)!])).toEqual([`${indent(15)}└─ [depth 9999] s9999`]);
    // The name column: as wide as the widest name line, at most 60.
    expect(lines[0]).toMatch(/^s0 {58}  pending/);
  });
});

describe("parseStep (--step)", () => {
  it("reads NAME[=KIND][@DEP,...], ~ and ! marking ignore and fail edges", () => {
    expect(parseStep("validate")).toEqual({ step: "validate", kind: "validate" });
    expect(parseStep("reserve=stock@validate")).toEqual({ step: "reserve", kind: "stock", dependsOn: ["validate"] });
    expect(parseStep("ship@charge,~reserve,!audit")).toEqual({
      step: "ship",
      kind: "ship",
      dependsOn: ["charge", { step: "reserve", onFailure: "ignore" }, { step: "audit", onFailure: "fail" }],
    });
    expect(() => parseStep("=k")).toThrow(/NAME/);
    expect(() => parseStep("a=b c")).toThrow(/KIND/);
    expect(() => parseStep("a@")).toThrow(/DEP/);
    expect(() => parseStep("a@b@c")).toThrow(/DEP/);
  });
});
