import { describe, expect, it } from "vitest";
import { clusterPerTest, exitWithin, expectSettled, faultTestTimeout, logLines, unitsHeldBy, waitFor } from "@rtb/testing";

/** `npm start` (scripts/start.ts) restarts a service that dies, and the run loses nothing. */
const run = clusterPerTest();

const pidsOf = (output: string, name: string) => [...output.matchAll(new RegExp(`\\[start\\] ${name} started \\(pid (\\d+)\\)`, "g"))].map((m) => Number(m[1]));
const readyAgents = (output: string, id: string) => logLines(output).filter((l) => l.msg === "agent ready" && l.agentId === id).length;

describe("the launcher", () => {
  it("restarts an agent killed with SIGKILL; the run completes; Ctrl-C then stops everything with exit 0", async () => {
    const c = await run.start({ RTB_SEED_UNITS: "200", RTB_AGENT_WORK_MIN_MS: "100", RTB_AGENT_WORK_MAX_MS: "200" });
    const launcher = await c.startLauncher();
    const [pid] = pidsOf(launcher.output(), "agent-1");
    expect(pid).toEqual(expect.any(Number));
    expect(readyAgents(launcher.output(), "agent-1")).toBe(1);
    await c.get("/go");

    await waitFor("agent-1 to hold units", async () => (await unitsHeldBy(c.db, "agent-1")).length > 0, 30_000);
    process.kill(pid!, "SIGKILL");

    await waitFor("the launcher to see agent-1 die", () => /\[start\] agent-1 died \(SIGKILL\); restarting in/.test(launcher.output()), 30_000);
    await waitFor("agent-1 to be back", () => readyAgents(launcher.output(), "agent-1") === 2, 30_000);
    const pids = pidsOf(launcher.output(), "agent-1");
    expect(pids).toHaveLength(2);
    expect(pids[1]).not.toBe(pid);

    await expectSettled(c);
    launcher.child.kill("SIGINT");
    expect(await exitWithin(launcher, 30_000, "the launcher")).toEqual({ code: 0, signal: null });
    expect(launcher.output()).toContain("[start] all services stopped");
  }, faultTestTimeout);
});
