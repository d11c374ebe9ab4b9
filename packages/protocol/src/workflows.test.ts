import { describe, expect, it } from "vitest";
import { dagProblem, SpawnSchema, type StepEdges } from "./workflows.ts";

const steps = (edges: Record<string, string[]>): StepEdges[] => Object.entries(edges).map(([step, dependsOn]) => ({ step, dependsOn }));

describe("dagProblem", () => {
  it("accepts a DAG (the order example, in any order of declaration)", () => {
    expect(dagProblem(steps({ notify: ["ship"], ship: ["charge", "reserve"], charge: ["validate"], reserve: ["validate"], validate: [] }))).toBeNull();
  });

  it("names a cycle by its path, from the first step on it", () => {
    expect(dagProblem(steps({ a: ["c"], b: ["a"], c: ["b"] }))).toEqual({ path: [0, "dependsOn"], message: "cycle: a -> c -> b -> a (each step waits for the next)" });
    // A cycle downstream of a sound part: only the cycle is named.
    expect(dagProblem(steps({ root: [], x: ["root", "y"], y: ["x"] }))?.message).toBe("cycle: x -> y -> x (each step waits for the next)");
  });

  it("names an unknown step, a self-dependency, a repeated dependency and a name used twice", () => {
    expect(dagProblem(steps({ a: [], b: ["nope"] }))).toEqual({ path: [1, "dependsOn", 0], message: 'no step named "nope" in this workflow' });
    expect(dagProblem(steps({ a: ["a"] }))?.path).toEqual([0, "dependsOn", 0]);
    expect(dagProblem(steps({ a: [], b: ["a", "a"] }))).toEqual({ path: [1, "dependsOn", 1], message: '"a" is listed twice' });
    expect(dagProblem([{ step: "a", dependsOn: [] }, { step: "a", dependsOn: [] }])?.path).toEqual([1, "step"]);
  });

  it("handles a chain of 10,000 steps without recursion", () => {
    const chain = Array.from({ length: 10_000 }, (_, i) => ({ step: `s${i}`, dependsOn: i === 0 ? [] : [`s${i - 1}`] }));
    expect(dagProblem(chain)).toBeNull();
    chain[0] = { step: "s0", dependsOn: ["s9999"] };
    expect(dagProblem(chain)?.message).toMatch(/^cycle: s0 -> s9999 -> s9998/);
  });
});

describe("a fan-out (SpawnSchema)", () => {
  it("checks its steps as a DAG with the join, and names the field", () => {
    const ok = SpawnSchema.safeParse({ steps: [{ step: "a", kind: "k" }, { step: "b", kind: "k", dependsOn: ["a"] }], join: { step: "j", kind: "k" } });
    expect(ok.success).toBe(true);
    const clash = SpawnSchema.safeParse({ steps: [{ step: "a", kind: "k" }], join: { step: "a", kind: "k" } });
    expect(clash.error?.issues[0]).toMatchObject({ path: ["join", "step"], message: 'step "a" is named twice (also steps[0])' });
    const cycle = SpawnSchema.safeParse({ steps: [{ step: "a", kind: "k", dependsOn: ["b"] }, { step: "b", kind: "k", dependsOn: ["a"] }] });
    expect(cycle.error?.issues[0]).toMatchObject({ path: ["steps", 0, "dependsOn"] });
    const joinWithEdges = SpawnSchema.safeParse({ steps: [{ step: "a", kind: "k" }], join: { step: "j", kind: "k", dependsOn: ["a"] } });
    // The join waits for every spawned step: it names no edges of its own.
    expect(joinWithEdges.error?.issues[0]).toMatchObject({ path: ["join"], keys: ["dependsOn"] });
  });
});
