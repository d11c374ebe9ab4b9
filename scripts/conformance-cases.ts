/**
 * The conformance suite: what any agent implementation must do, checked on the real system
 * (conformance-system.ts) through what the api recorded of the agent's reports (GET /units/:id
 * and its timeline, GET /'s instances, its counters) and the broker's queues. The agent serves
 * the `conformance` kind (services/agent/src/conformance.ts says what its payloads ask).
 *
 * The run, in order: a unit waits for an agent of its kind before any exists; agent 1 starts
 * (heartbeats, kinds, results, errors, limits, cancel), is stopped with two jobs in hand that
 * cannot finish; with no agent running the suite finds those jobs back in the queue (handed
 * back), puts them back to succeed at once, and feeds the queue a batch, invalid messages and a
 * duplicate; agent 2 starts and must finish all of it (and time out an overlong attempt), then
 * stop cleanly.
 */
import { randomBytes } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import { BatchJobMessage, encodeMessage } from "@rtb/protocol";
import { AGENT_SETTINGS, KIND, startConformanceSystem, type AgentProc, type System } from "./conformance-system.ts";

export const CASES = [
  "heartbeat",
  "kinds",
  "processing before success",
  "result round-trip",
  "traceparent",
  "retryable error",
  "permanent error",
  "error message limit",
  "cancel",
  "shutdown hand-back",
  "batch job",
  "invalid job dead-lettered",
  "redelivered job",
  "timeout",
  "clean exit",
] as const;
export type CaseName = (typeof CASES)[number];
export interface CaseResult {
  name: CaseName;
  ok: boolean;
  reason: string;
}

class CaseFailed extends Error {}
const fail = (reason: string): never => {
  throw new CaseFailed(reason);
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const short = (v: unknown) => {
  const s = JSON.stringify(v);
  return s === undefined ? "undefined" : s.length > 160 ? `${s.slice(0, 160)}...` : s;
};

async function until<T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) return fail(`${what} (waited ${timeoutMs / 1000} s)`);
    await sleep(100);
  }
}

/** Results that must come back exactly: nesting, unicode beyond the BMP, escapes, numbers, empties. */
const RESULTS: unknown[] = [
  { nested: { deeper: { list: [1, 2.5, -3, 1234.5678, true, false, null, "x"], empty: {}, none: [] } }, count: 9007199254740991 },
  "héllo wörld ✓ 日本語 🚀 \u2028 \"quoted\" back\\slash\nnew line\ttab",
  [[[[[[[[[["ten deep"]]]]]]]]]],
  0,
  "",
  null,
];

export async function runConformance(opts: { agent: string; cwd?: string; say?: (line: string) => void }): Promise<CaseResult[]> {
  const say = opts.say ?? (() => {});
  const results: CaseResult[] = [];
  const done = new Set<CaseName>();
  const check = async (name: CaseName, fn: () => Promise<void>) => {
    let result: CaseResult;
    try {
      await fn();
      result = { name, ok: true, reason: "" };
    } catch (err) {
      result = { name, ok: false, reason: err instanceof CaseFailed ? err.message : `suite error: ${(err as Error).stack ?? String(err)}` };
    }
    done.add(name);
    results.push(result);
    say(result.ok ? `pass  ${name}` : `FAIL  ${name}: ${result.reason}`);
    return result.ok;
  };
  const sys = await startConformanceSystem(opts);
  let agent: AgentProc | undefined;
  try {
    await drive(sys, check, (a) => (agent = a));
  } catch (err) {
    const tail = agent ? `\nthe agent's last output:\n${agent.output().slice(-3000)}` : "";
    let first = true;
    for (const name of CASES) {
      if (done.has(name)) continue;
      await check(name, async () => fail(`not run: ${(err as Error).message}${first ? tail : ""}`));
      first = false;
    }
  } finally {
    await sys.stop();
  }
  return results;
}

/** How long past RTB_SHUTDOWN_TIMEOUT_MS an agent may take to exit after SIGTERM (closing its connection, a busy machine). */
const EXIT_GRACE_MS = 4_000;

/** The restarted agent's RTB_AGENT_TIMEOUT_MS: the timeout case waits this long once. */
const SECOND_TIMEOUT_MS = "3000";

type Check = (name: CaseName, fn: () => Promise<void>) => Promise<boolean>;

async function drive(sys: System, check: Check, current: (a: AgentProc) => void) {
  const unit = (id: number) => sys.get(`/units/${id}`);
  const settled = (id: number, timeoutMs = 15_000) =>
    until(`unit ${id} to end`, async () => {
      const u = await unit(id);
      return ["success", "error", "cancelled"].includes(u.status) ? u : null;
    }, timeoutMs);
  const agentSource = (a: AgentProc) => `agent:${a.id}`;
  const instance = async (a: AgentProc) => ((await sys.get("/")).services.agents as any[]).find((i) => i.id === a.id);
  const ignoredReports = async () => Object.values((await sys.get("/")).reports.ignored as Record<string, number>).reduce((a, b) => a + b, 0);
  /** Reports the api ignored because their unit was cancelled (the status rules, db/src/status-transitions.ts). */
  const ignoredCancelled = async () => Number((await sys.get("/")).reports.ignored.cancelled ?? 0);
  const expectSuccess = (u: any, attempt: number, result: unknown) => {
    if (u.status !== "success") fail(`unit ${u.id} ended ${u.status} (${short(u.lastError)}), expected success`);
    if (u.attempt !== attempt) fail(`unit ${u.id} succeeded on attempt ${u.attempt}, expected ${attempt}`);
    if (!isDeepStrictEqual(u.result, result)) fail(`unit ${u.id}'s result is ${short(u.result)}, expected ${short(result)}`);
  };
  const eventsOf = (u: any, attempt: number) => (u.events as any[]).filter((e) => e.attempt === attempt);

  // A unit enqueued before any agent of its kind exists waits for one (the leader finds no job queue).
  const [waiting] = await sys.enqueue([{ do: "succeed", result: "waited for an agent" }]);
  await until("the api to list the conformance kind as waiting for an agent", async () => ((await sys.get("/")).waitingForAgents as any[]).some((w) => w.kind === KIND), 15_000);

  const first = sys.startAgent();
  current(first);
  let firstOk = await check("heartbeat", async () => {
    const seen = await until(`agent ${first.id} to appear in GET /'s services.agents (its heartbeat, a status message with no updates and source.id = RTB_AGENT_ID)`, async () => {
      if (!first.running()) fail(`the agent exited (${short(await first.exit)}) before its first heartbeat; its output:\n${first.output().slice(-2000)}`);
      return instance(first);
    }, 30_000);
    await until(`a second heartbeat from ${first.id} (lastSeen to move on; RTB_HEARTBEAT_MS is ${AGENT_SETTINGS.RTB_HEARTBEAT_MS})`, async () => (await instance(first))?.lastSeen !== seen.lastSeen, 5_000);
  });
  await check("kinds", async () => {
    const u = await until(`unit ${waiting} (waiting for an agent) to be released and end: the heartbeat must name the kinds served ("kinds": ["${KIND}"])`, async () => {
      const u = await unit(waiting!);
      return u.status === "success" || u.status === "error" ? u : null;
    }, 15_000);
    // Its first dispatch found no agent: the run that counts is the next attempt.
    expectSuccess(u, u.attempt, "waited for an agent");
  });
  firstOk &&= first.running();

  const resultIds = await sys.enqueue([...RESULTS.map((result) => ({ do: "succeed", result })), { do: "succeed" }]);
  const ends = await Promise.all(resultIds.map((id) => settled(id).catch((err: Error) => err)));
  await check("processing before success", async () => {
    for (const u of ends) {
      if (u instanceof Error) throw u;
      const statuses = eventsOf(u, 1).filter((e) => e.source === agentSource(first)).map((e) => e.status);
      if (statuses[0] !== "processing" || statuses.at(-1) !== "success") fail(`unit ${u.id}'s events from ${agentSource(first)} are ${short(statuses)}, expected processing then success`);
    }
  });
  await check("result round-trip", async () => {
    ends.forEach((u, i) => {
      if (u instanceof Error) throw u;
      expectSuccess(u, 1, i < RESULTS.length ? RESULTS[i] : null);
    });
  });

  await check("traceparent", async () => {
    const traceId = randomBytes(16).toString("hex");
    const [traced] = await sys.enqueue([{ do: "succeed", result: "traced" }], `00-${traceId}-${randomBytes(8).toString("hex")}-01`);
    expectSuccess(await settled(traced!), 1, "traced");
    // Each of the agent's reports is applied in a span whose parent is the traceparent it carried.
    const applied = await until(`the api's apply spans of the agent's processing and success reports in the unit's trace: copy the job's traceparent (per unit) into each status update`, async () => {
      const statuses = sys.spans().filter((s) => s.traceId === traceId && s.name === "apply" && s.attributes["rtb.source"] === "agent").map((s) => s.attributes["rtb.unit.status"]);
      return statuses.includes("processing") && statuses.includes("success") ? statuses : null;
    }, 5_000);
    void applied;
  });

  const [retried, permanent, atLimit, overLimit] = await sys.enqueue([
    { do: "fail", message: "try again later", retryable: true, attempts: 1 },
    { do: "fail", message: "cannot ever work ✗", retryable: false },
    { do: "fail", message: "m".repeat(4_000), retryable: false },
    { do: "fail", message: `${"n".repeat(4_000)}cut here`, retryable: false },
  ]);
  await check("retryable error", async () => {
    const u = await settled(retried!);
    const error = eventsOf(u, 1).find((e) => e.status === "error");
    if (!error) fail(`unit ${u.id} has no error event for attempt 1 (its events: ${short(u.events.map((e: any) => [e.attempt, e.status]))})`);
    if (error.detail?.retryable !== true || error.detail?.message !== "try again later") fail(`attempt 1's error is ${short(error.detail)}, expected message "try again later", retryable true`);
    expectSuccess(u, 2, { attempt: 2 });
  });
  await check("permanent error", async () => {
    const u = await settled(permanent!);
    if (u.status !== "error" || u.attempt !== 1) fail(`unit ${u.id} is ${u.status} on attempt ${u.attempt}, expected error on attempt 1 (no retry)`);
    if (u.lastError !== "cannot ever work ✗") fail(`unit ${u.id}'s error is ${short(u.lastError)}, expected "cannot ever work ✗"`);
    const error = eventsOf(u, 1).find((e) => e.status === "error");
    if (error?.detail?.retryable !== false) fail(`the error event says ${short(error?.detail)}, expected retryable false`);
  });
  await check("error message limit", async () => {
    const at = await settled(atLimit!);
    if (at.lastError !== "m".repeat(4_000)) fail(`a 4000-character message came back as ${at.lastError?.length ?? "nothing"} characters (status ${at.status}), expected all 4000`);
    const over = await settled(overLimit!, 8_000).catch(() => fail(`unit ${overLimit} with a 4008-character error never ended: a report over the protocol's 4000-character limit is refused (dead-lettered) by the api; cut it`));
    if (over.lastError !== "n".repeat(4_000)) fail(`a 4008-character message came back as ${short(over.lastError)} (${over.lastError?.length} characters), expected its first 4000`);
  });

  await check("cancel", async () => {
    const sleepers = await sys.enqueue([{ do: "sleep", ms: 600_000 }, { do: "sleep", ms: 600_000 }]);
    await until(`both sleeping units to be processing`, async () => (await Promise.all(sleepers.map(unit))).every((u) => u.status === "processing"), 10_000);
    const cancelledBefore = await ignoredCancelled();
    for (const id of sleepers) await sys.post(`/units/${id}/cancel`);
    // Both handler slots (RTB_AGENT_CONCURRENCY=2) were taken by the sleepers: this unit runs only if the cancel aborted them.
    const [after] = await sys.enqueue([{ do: "succeed", result: "after the cancel" }]);
    const u = await settled(after!, 8_000).catch(() =>
      fail(`a unit enqueued after cancelling the 2 running ones (RTB_AGENT_CONCURRENCY=2) did not run: the cancel (a message on rtb.control) must abort the running handlers and free their slots`),
    );
    expectSuccess(u, 1, "after the cancel");
    await sleep(1_000);
    for (const id of sleepers) {
      const s = await unit(id);
      if (s.status !== "cancelled") fail(`unit ${id} is ${s.status}, expected cancelled`);
      const late = eventsOf(s, 1).filter((e) => e.source === agentSource(first) && e.status !== "processing");
      if (late.length > 0) fail(`unit ${id}: the agent reported ${short(late.map((e) => e.status))} for a cancelled attempt, expected nothing more`);
    }
    const lateReports = (await ignoredCancelled()) - cancelledBefore;
    if (lateReports > 0) fail(`the api ignored ${lateReports} report(s) for the cancelled units (GET / reports.ignored.cancelled): nothing more may be reported for a cancelled attempt`);
  });

  // Two jobs in hand that cannot finish: at SIGTERM they must go back to the job queue, unreported.
  const handedBack = await sys.enqueue([{ do: "sleep", ms: 600_000, result: "never" }, { do: "sleep", ms: 600_000, result: "never" }]);
  const atShutdown = await (async () => {
    await until(`both units to be processing on ${first.id}`, async () => (await Promise.all(handedBack.map(unit))).every((u) => u.status === "processing"), 10_000);
    first.child.kill("SIGTERM");
    const bound = Number(AGENT_SETTINGS.RTB_SHUTDOWN_TIMEOUT_MS) + EXIT_GRACE_MS;
    const exit = await Promise.race([first.exit, sleep(bound).then(() => null)]);
    if (!exit) return fail(`the agent did not exit within ${bound} ms of SIGTERM (RTB_SHUTDOWN_TIMEOUT_MS=${AGENT_SETTINGS.RTB_SHUTDOWN_TIMEOUT_MS}): it must hand back what it cannot finish`);
    if (exit.code !== 0) fail(`the agent exited with ${short(exit)} after SIGTERM, expected code 0`);
    for (const id of handedBack) {
      const u = await unit(id);
      const reported = eventsOf(u, 1).filter((e) => e.status === "error" || e.status === "success");
      if (reported.length > 0 || u.attempt !== 1) fail(`unit ${id} got ${short(reported.map((e) => e.detail ?? e.status))} at shutdown (attempt ${u.attempt}): a job cut short by the shutdown is handed back (nack with requeue), not reported`);
    }
  })().then(() => null, (err: unknown) => err);
  if (first.running()) first.child.kill("SIGKILL");
  await first.exit;

  // No agent consumes now: the suite takes the handed-back jobs and the leader's jobs of three
  // new units off the queue, and puts back the first two to succeed at once (they would sleep
  // again) and the three as one batch job (the form the leader sends while the queue is deep).
  const batchIds = await sys.enqueue([1, 2, 3].map((n) => ({ do: "succeed", result: { n, text: `unit ${n} of a batch` } })));
  let handBackProblem: string | null = null;
  const batchFed = await sys
    .takeJobs([...handedBack, ...batchIds], 10_000, async (units, missing) => {
      const lost = handedBack.filter((id) => missing.includes(id));
      if (lost.length > 0) handBackProblem = `the jobs of units ${lost.join(", ")} are not back in ${sys.topology.jobQueue(KIND)} after the agent exited: hand back (nack with requeue) what the shutdown cut short`;
      for (const u of units.filter((u) => handedBack.includes(u.unitId))) {
        if (u.attempt !== 1) handBackProblem ??= `unit ${u.unitId}'s job came back with attempt ${u.attempt}, expected the same attempt (1)`;
        await sys.publishJob(encodeMessage({ v: 1, type: "job", unitId: u.unitId, attempt: u.attempt, kind: KIND, payload: { do: "succeed", result: "handed back" } }));
      }
      const batch = units.filter((u) => batchIds.includes(u.unitId)).map((u) => ({ unitId: u.unitId, attempt: u.attempt, payload: u.payload }));
      if (batch.length !== batchIds.length) throw new Error(`the leader's jobs of units ${batchIds.filter((id) => missing.includes(id)).join(", ")} never reached the job queue`);
      await sys.publishJob(encodeMessage(BatchJobMessage.parse({ v: 1, type: "job", kind: KIND, units: batch })));
    })
    .then(() => null, (err: Error) => err);
  const deadBefore = await sys.depth(sys.topology.dead);
  await sys.publishJob(Buffer.from("this is not JSON"));
  await sys.publishJob(encodeMessage({ v: 1, type: "job", unitId: 0, attempt: 1, kind: KIND, payload: {} } as never));
  const duplicateOf = resultIds[0]!;
  await sys.publishJob(encodeMessage({ v: 1, type: "job", unitId: duplicateOf, attempt: 1, kind: KIND, payload: { do: "succeed", result: "a second delivery" } }));
  const ignoredBefore = await ignoredReports();

  const second = sys.startAgent({ RTB_AGENT_TIMEOUT_MS: SECOND_TIMEOUT_MS });
  current(second);
  await until(`agent ${second.id} to heartbeat`, async () => {
    if (!second.running()) fail(`the restarted agent exited (${short(await second.exit)}); its output:\n${second.output().slice(-2000)}`);
    return instance(second);
  }, 30_000).catch(() => null);
  const [timedOut] = await sys.enqueue([{ do: "sleep", ms: 600_000, attempts: 1 }]);

  await check("shutdown hand-back", async () => {
    if (atShutdown) throw atShutdown;
    if (!firstOk) fail("not checked: the first agent did not start and heartbeat");
    if (handBackProblem) fail(handBackProblem);
    for (const id of handedBack) {
      const u = await settled(id);
      expectSuccess(u, 1, "handed back");
      const last = u.events.at(-1);
      if (last.source !== agentSource(second)) fail(`unit ${id}'s success came from ${last.source}, expected the restarted agent ${agentSource(second)}`);
    }
  });
  await check("batch job", async () => {
    if (batchFed) fail(`suite could not feed a batch: ${batchFed.message}`);
    for (const [i, id] of batchIds.entries()) {
      const u = await settled(id);
      expectSuccess(u, 1, { n: i + 1, text: `unit ${i + 1} of a batch` });
      const statuses = eventsOf(u, 1).map((e) => e.status);
      if (!statuses.includes("processing")) fail(`unit ${id} of the batch has no processing event: each unit of a batch is reported as if it came alone`);
    }
  });
  await check("invalid job dead-lettered", async () => {
    await until(`2 invalid job messages (not JSON; unitId 0) to reach ${sys.topology.dead}: nack them without requeue`, async () => (await sys.depth(sys.topology.dead)) - deadBefore >= 2, 10_000);
    await until(`agent ${second.id}'s heartbeat to count them (counters.deadLettered = 2 in GET /)`, async () => (await instance(second))?.deadLettered === 2, 10_000);
    if (!second.running()) fail("the agent exited after an invalid job: it must go on");
  });
  await check("redelivered job", async () => {
    await until(`the duplicate job of unit ${duplicateOf} to be run and reported (the api ignores the reports of a finished attempt)`, async () => (await ignoredReports()) > ignoredBefore, 10_000);
    const u = await unit(duplicateOf);
    expectSuccess(u, 1, RESULTS[0]);
    if ((await sys.depth(sys.topology.dead)) - deadBefore !== 2) fail("a duplicate job was dead-lettered: a job delivered again is run again, never refused");
  });
  await check("timeout", async () => {
    const u = await settled(timedOut!, 20_000);
    const error = eventsOf(u, 1).find((e) => e.status === "error");
    if (error?.detail?.retryable !== true) fail(`attempt 1 (sleeping past RTB_AGENT_TIMEOUT_MS=${SECOND_TIMEOUT_MS}) ended ${short(error?.detail ?? u.status)}, expected a retryable error`);
    expectSuccess(u, 2, { attempt: 2 });
  });
  await check("clean exit", async () => {
    if (!second.running()) fail(`the agent is not running (${short(await second.exit)})`);
    second.child.kill("SIGTERM");
    const bound = Number(AGENT_SETTINGS.RTB_SHUTDOWN_TIMEOUT_MS) + EXIT_GRACE_MS;
    const exit = await Promise.race([second.exit, sleep(bound).then(() => null)]);
    if (!exit) return fail(`the agent did not exit within ${bound} ms of SIGTERM with nothing in hand`);
    if (exit.code !== 0) fail(`the agent exited with ${short(exit)} after SIGTERM, expected code 0`);
  });
}
