import { sql } from "kysely";
import { afterEach, describe, expect, it } from "vitest";
import { checkSystem, loadApiConfig } from "@rtb/api";
import { UnitCancelledError, type Handler } from "@rtb/agent";
import { clusterPerTest, expectSettled, faultTestTimeout, logLines, startSystem, unitsHeldBy, useTestPlace, waitFor, type System } from "@rtb/testing";

/**
 * Cancelling work that runs, on a whole system: races against a handler finishing, against a
 * retry's backoff, against an agent killed mid-run; handlers that honour their signal see it
 * fire; a bulk cancel by group leaves the other groups alone. Every run ends with the
 * product's checker finding no broken rule.
 */

/** What each handler call saw, by unit and attempt: whether its signal fired, why, and how long after the cancel. */
const seen = new Map<string, { reason?: unknown; msAfterCancel?: number }>();
const cancelledAt = new Map<number, number>();

/** Works `payload.ms`, honouring its signal; fails retryably when `payload.fail`. */
const work: Handler = (job) =>
  new Promise((resolve, reject) => {
    const call: { reason?: unknown; msAfterCancel?: number } = {};
    seen.set(`${job.unitId}:${job.attempt}`, call);
    const { ms = 50, fail = false } = job.payload as { ms?: number; fail?: boolean };
    const timer = setTimeout(() => (fail ? reject(new Error("boom, try again")) : resolve({ worked: ms })), ms);
    job.signal.addEventListener("abort", () => {
      call.reason = job.signal.reason;
      call.msAfterCancel = Date.now() - (cancelledAt.get(job.unitId) ?? Date.now());
      clearTimeout(timer);
      reject(job.signal.reason);
    });
  });

describe("on an in-process system", () => {
  const place = useTestPlace({ kinds: ["work"] });
  let system: System | undefined;
  afterEach(async () => {
    await system?.stop();
    system = undefined;
  });

  const env = { RTB_SEED_UNITS: "0", RTB_BROADCAST_MAX_QUEUE: "20", RTB_AGENT_CONCURRENCY: "8", RTB_RETRY_BACKOFF_MS: "100", RTB_MAX_ATTEMPTS: "6", RTB_DISPATCH_TIMEOUT_MS: "3000" };
  const post = (path: string, body?: unknown) =>
    system!.api.app.request(path, { method: "POST", ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { "content-type": "application/json" } }) });
  const cancel = async (id: number) => {
    cancelledAt.set(id, Date.now());
    return (await post(`/units/${id}/cancel`)).status;
  };
  const enqueue = async (units: object[]): Promise<number[]> => ((await (await post("/units", units)).json()) as any).units.map((u: any) => u.id);
  const db = () => system!.api.database.db;
  const statuses = async (ids: number[]) => {
    const rows = await db().selectFrom("units").select(["id", "status", "attempt"]).where("id", "in", ids).orderBy("id").execute();
    return new Map(rows.map((r) => [r.id, r]));
  };
  /** The product's checker, once nothing is left to do: no rule broken. */
  async function expectChecked() {
    await waitFor("every unit finished", async () => (await system!.get("/")).done, 30_000);
    const config = loadApiConfig({ ...place.env, ...env });
    const report = await checkSystem({
      db: db(),
      broker: system!.api.broker,
      maxQueue: config.RTB_BROADCAST_MAX_QUEUE,
      dispatchTimeoutMs: config.RTB_DISPATCH_TIMEOUT_MS,
      processingTimeoutMs: config.RTB_PROCESSING_TIMEOUT_MS,
      expectDone: true,
    });
    expect(report.violations).toEqual([]);
  }
  /** Terminal (success/error) events recorded for each unit's attempt `attempt`. */
  async function outcomesOf(id: number, attempt: number) {
    const { rows } = await sql<{ status: string }>`SELECT status FROM unit_events WHERE unit_id = ${id} AND attempt = ${attempt} AND status IN ('success', 'error')`.execute(db());
    return rows.map((r) => r.status);
  }

  it("cancel against success: whichever commits first wins, and the other changes nothing", async () => {
    system = await startSystem(place, env, { agents: 2, handlers: new Map([["work", work]]) });
    const ids = await enqueue(Array.from({ length: 30 }, () => ({ kind: "work", payload: { ms: 40 } })));
    await system.get("/go");
    // Each unit is cancelled once it is seen processing, a random 0-80 ms later: about when its handler finishes.
    const answers = new Map<number, number>();
    await waitFor(
      "every unit to be cancelled or to have finished",
      async () => {
        const now = await statuses(ids);
        for (const [id, u] of now) {
          if (u.status === "processing" && !answers.has(id)) {
            answers.set(id, 0);
            setTimeout(() => void cancel(id).then((s) => answers.set(id, s)), Math.random() * 80);
          }
        }
        return [...now.values()].every((u) => u.status === "success" || u.status === "cancelled") && [...answers.values()].every((s) => s !== 0);
      },
      30_000,
      10,
    );
    const final = await statuses(ids);
    let cancelled = 0;
    for (const [id, status] of answers) {
      const u = final.get(id)!;
      if (status === 200) {
        // The cancel won: no success for that attempt, whatever the handler did.
        cancelled++;
        expect(u.status).toBe("cancelled");
        expect(await outcomesOf(id, u.attempt)).toEqual([]);
      } else {
        // The success won: the cancel was a 409 and wrote nothing.
        expect(status).toBe(409);
        expect(u.status).toBe("success");
      }
    }
    console.log(`cancel against success: ${cancelled} cancelled, ${answers.size - cancelled} finished first; ${(await system.get("/")).reports.ignored.cancelled ?? 0} late reports ignored`);
    await expectChecked();
  }, 60_000);

  it("cancel against retry: a unit cancelled while it fails and waits for its backoff is never dispatched again", async () => {
    system = await startSystem(place, env, { agents: 2, handlers: new Map([["work", work]]) });
    const ids = await enqueue(Array.from({ length: 12 }, () => ({ kind: "work", payload: { ms: 20, fail: true } })));
    await system.get("/go");
    // Cancelled at random while they run, fail, wait 100 ms and more, run again.
    const answers = await Promise.all(ids.map((id) => new Promise<number>((r) => setTimeout(() => void cancel(id).then(r), Math.random() * 400))));
    expect(answers.every((s) => s === 200)).toBe(true);
    const at = await statuses(ids);
    expect([...at.values()].every((u) => u.status === "cancelled")).toBe(true);
    // Past several backoffs: still cancelled, on the same attempt.
    await new Promise((r) => setTimeout(r, 1_000));
    const later = await statuses(ids);
    for (const id of ids) expect(later.get(id)).toEqual(at.get(id));
    console.log(`cancel against retry: cancelled at attempts ${[...at.values()].map((u) => u.attempt).join(", ")}`);
    await expectChecked();
  }, 60_000);

  it("a bulk cancel of a group aborts its running handlers (their signal fires) and leaves the other groups alone", async () => {
    system = await startSystem(place, env, { agents: 2, handlers: new Map([["work", work]]) });
    const acme = await enqueue(Array.from({ length: 6 }, () => ({ kind: "work", group: "acme", payload: { ms: 60_000 } })));
    const globex = await enqueue(Array.from({ length: 6 }, () => ({ kind: "work", group: "globex", payload: { ms: 200 } })));
    await system.get("/go");
    await waitFor("acme's units to run", async () => [...(await statuses(acme)).values()].every((u) => u.status === "processing"), 20_000);
    for (const id of acme) cancelledAt.set(id, Date.now());
    const res = await post("/units/cancel", { group: "acme" });
    expect(await res.json()).toEqual({ cancelled: 6, inFlight: 6 });
    // Each handler honouring its signal sees it fire, with the reason.
    const aborted = await waitFor("every acme handler's signal to fire", () => {
      const calls = acme.map((id) => seen.get(`${id}:1`));
      return calls.every((c) => c?.reason !== undefined) ? calls : null;
    });
    for (const c of aborted) expect(c!.reason).toBeInstanceOf(UnitCancelledError);
    console.log(`bulk cancel -> handler aborts: ${aborted.map((c) => c!.msAfterCancel).join(", ")} ms`);
    await waitFor("globex's units to succeed", async () => [...(await statuses(globex)).values()].every((u) => u.status === "success"), 20_000);
    expect([...(await statuses(acme)).values()].every((u) => u.status === "cancelled")).toBe(true);
    // The agents reported nothing for the aborted attempts, and acked their jobs.
    for (const id of acme) expect(await outcomesOf(id, 1)).toEqual([]);
    expect(system.agents.reduce((n, a) => n + a.stats.cancelled, 0)).toBe(6);
    await waitFor("nothing in hand", () => system!.agents.every((a) => a.stats.inFlight === 0));
    await expectChecked();
  }, 60_000);
});

describe("against an agent killed mid-run", () => {
  const run = clusterPerTest();

  it("kill -9 of the agent running them, then the cancel: their jobs, redelivered to an agent that never heard it, are aborted or dropped, and nothing is recorded for them", async () => {
    const c = await run.start({ RTB_SEED_UNITS: "30", RTB_AGENT_ERROR_RATE: "0" });
    await c.start("api");
    await c.start("leader-1");
    // agent-1 is slow, so it holds units when it dies; no other agent is running then.
    await c.start("agent-1", { RTB_AGENT_WORK_MIN_MS: "20000", RTB_AGENT_WORK_MAX_MS: "20000" });
    await c.get("/go");
    await waitFor("agent-1 to hold 4 units", async () => (await unitsHeldBy(c.db, "agent-1")).length === 4, 30_000);
    const held = await unitsHeldBy(c.db, "agent-1");
    expect(await c.kill("agent-1", "SIGKILL")).toEqual({ code: null, signal: "SIGKILL" });
    // No agent is connected: the announcement reaches nobody.
    for (const u of held) expect((await fetch(`${c.url}/units/${u.id}/cancel`, { method: "POST" })).status).toBe(200);

    // agent-2 takes the redelivered jobs without having heard of the cancel: its processing
    // report is ignored, the api announces the cancel again, and agent-2 aborts the handler.
    await c.start("agent-2", { RTB_AGENT_WORK_MIN_MS: "1000", RTB_AGENT_WORK_MAX_MS: "1500" });
    await expectSettled(c, 60_000, { cancelled: held.length });
    for (const u of held) {
      const { rows } = await sql<{ status: string; source: string }>`
        SELECT status, source FROM unit_events WHERE unit_id = ${u.id} AND attempt = ${u.attempt} ORDER BY id`.execute(c.db);
      // Dispatched, queued (or not), processing by agent-1, cancelled: no success, no error, nothing from agent-2.
      expect(rows.map((r) => r.status).filter((s) => s !== "queued")).toEqual(["dispatched", "processing", "cancelled"]);
      expect(rows.some((r) => r.source === "agent:agent-2")).toBe(false);
    }
    const stopped = logLines(c.output("agent-2")).filter((l) => held.some((u) => u.id === l.unitId) && /^attempt cancelled/.test(l.msg));
    expect(new Set(stopped.map((l) => l.unitId))).toEqual(new Set(held.map((u) => u.id)));
    const state = await c.get("/");
    expect(state.reports.ignored.cancelled).toBeGreaterThanOrEqual(held.length);
  }, faultTestTimeout);
});
