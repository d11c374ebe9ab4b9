import { describe, expect, it } from "vitest";
import { defaultQueueType, exitWithin, pythonWithPika, runCommand, runScript } from "@rtb/testing";
import { CASES } from "../../scripts/conformance-cases.ts";

/**
 * `npm run conformance`, as a user runs it, against the built-in TypeScript agent and the
 * Python example agent (python/rtb_agent on Debian's python3-pika): every case passes. The
 * same Python agent told to misbehave fails exactly the cases it breaks, and the command
 * exits 1: the suite does catch an agent that does not conform.
 */

// On the run's queue type: RTB_TEST_QUEUE_TYPE=classic npm test runs the suite on classic queues.
const conformance = (agent: string) => runScript("scripts/conformance.ts", ["--agent", agent], { RTB_BROKER_QUEUE_TYPE: defaultQueueType() });
const lines = (stdout: string) => stdout.split("\n").filter((l) => /^(pass|FAIL) /.test(l));
const passed = (stdout: string) => lines(stdout).filter((l) => l.startsWith("pass")).map((l) => l.slice(6));
const pythonAgent = () => `${pythonWithPika()} examples/python-agent/agent.py`;

// One after another: the cases wait on the agent's own timers (shutdown, timeout), which a busy machine stretches.
describe("npm run conformance", () => {
  it("passes the built-in TypeScript agent on every case", { timeout: 120_000 }, async () => {
    const { code, stdout, stderr } = await conformance(`${process.execPath} --import tsx services/agent/src/main.ts`);
    expect(lines(stdout).filter((l) => l.startsWith("FAIL")), stderr).toEqual([]);
    expect(passed(stdout)).toEqual([...CASES]);
    expect(stdout).toMatch(new RegExp(`^conformance: ${CASES.length} passed, 0 failed in [\\d.]+ s$`, "m"));
    expect(code).toBe(0);
  });

  it("passes the Python example agent on every case, heartbeats and shutdown hand-back included", { timeout: 120_000 }, async () => {
    const { code, stdout, stderr } = await conformance(pythonAgent());
    expect(lines(stdout).filter((l) => l.startsWith("FAIL")), stderr).toEqual([]);
    expect(passed(stdout)).toEqual([...CASES]);
    expect(code).toBe(0);
  });

  it("fails an agent that drops the traceparent, sends over-long error messages and reports errors at shutdown, naming those cases (exit 1)", { timeout: 120_000 }, async () => {
    const { code, stdout } = await conformance(`${pythonAgent()} --misbehave no-traceparent --misbehave long-errors --misbehave error-on-shutdown`);
    const failed = lines(stdout).filter((l) => l.startsWith("FAIL"));
    expect(failed).toEqual([
      expect.stringMatching(/^FAIL {2}traceparent: the api's apply spans of the agent's processing and success reports in the unit's trace: copy the job's traceparent/),
      expect.stringMatching(/^FAIL {2}error message limit: unit \d+ with a 4008-character error never ended: a report over the protocol's 4000-character limit is refused/),
      expect.stringMatching(/^FAIL {2}shutdown hand-back: unit \d+ got .*"agent shutting down".* at shutdown \(attempt 1\): a job cut short by the shutdown is handed back/),
    ]);
    expect(passed(stdout)).toEqual(CASES.filter((c) => c !== "traceparent" && c !== "error message limit" && c !== "shutdown hand-back"));
    expect(code).toBe(1);
  });
});

it("refuses a run without --agent (exit 2)", async () => {
  const { code, stderr } = await runScript("scripts/conformance.ts", []);
  expect(code).toBe(2);
  expect(stderr).toContain("--agent: expected the command line that starts the agent");
});

it("the Python agent stops at a bad setting, naming it (exit 2)", async () => {
  const python = pythonWithPika();
  const p = runCommand(python, ["examples/python-agent/agent.py"], { RTB_AGENT_CONCURRENCY: "0", RTB_HEARTBEAT_MS: "fast" });
  const exit = await exitWithin(p, 10_000, "the Python agent");
  expect(exit.code).toBe(2);
  expect(p.output()).toContain('RTB_AGENT_CONCURRENCY="0": expected an integer >= 1');
  expect(p.output()).toContain('RTB_HEARTBEAT_MS="fast": expected an integer');
});

it("rtb_agent's own unit tests pass (python -m unittest: message rules, the 4000-character cut in UTF-16 units, traceparent, the result size limit at and past it, config)", async () => {
  const p = runCommand(pythonWithPika(), ["-m", "unittest", "discover", "-s", "python/tests"], {});
  const exit = await exitWithin(p, 30_000, "python -m unittest");
  expect(exit.code, p.output()).toBe(0);
  expect(p.output()).toMatch(/^Ran 17 tests/m);
});
