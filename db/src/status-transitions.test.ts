import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { planTransitions, retryDelayMs, type ReportedUpdate, type UnitState } from "./status-transitions.ts";

const now = new Date("2026-01-01T00:00:00Z");
const opts = { now, retryBaseMs: 1_000, retryMaxMs: 60_000 };
const unit = (over: Partial<UnitState> = {}): UnitState => ({ id: 1, status: "dispatched", attempt: 1, maxAttempts: 3, ...over });
const report = (over: Partial<ReportedUpdate>): ReportedUpdate => ({ unitId: 1, attempt: 1, status: "queued", at: now, source: "agent:a", ...over });
const plan = (u: UnitState, updates: ReportedUpdate[]) => planTransitions(new Map([[u.id, u]]), updates, opts);

describe("status transitions", () => {
  it("applies a forward report of the current attempt", () => {
    const p = plan(unit(), [report({ status: "queued" })]);
    expect(p.applied.map((a) => a.eventStatus)).toEqual(["queued"]);
    expect(p.outcomes.get(1)?.status).toBe("queued");
  });

  it("ignores a duplicate: the same report twice is applied once", () => {
    const p = plan(unit(), [report({ status: "processing" }), report({ status: "processing" })]);
    expect(p.applied).toHaveLength(1);
    expect(p.ignored.map((i) => i.reason)).toEqual(["not_forward"]);
  });

  it("a second `processing` for the running attempt (a redelivered job) restarts its timeout, with no new event", () => {
    const p = plan(unit({ status: "processing" }), [report({ status: "processing", source: "agent:b" })]);
    expect(p.applied).toHaveLength(0);
    expect(p.touched).toEqual([1]);
    expect(plan(unit({ status: "processing", attempt: 2 }), [report({ status: "processing" })]).touched).toEqual([]);
    expect(plan(unit({ status: "queued" }), [report({ status: "queued" })]).touched).toEqual([]);
  });

  it("ignores a report of an earlier attempt (stale)", () => {
    const p = plan(unit({ attempt: 2 }), [report({ attempt: 1, status: "success" })]);
    expect(p.applied).toHaveLength(0);
    expect(p.ignored[0]?.reason).toBe("stale_attempt");
  });

  it("ignores a report that arrives after a later one (out of order)", () => {
    const p = plan(unit({ status: "processing" }), [report({ status: "queued" })]);
    expect(p.applied).toHaveLength(0);
    expect(p.ignored[0]?.reason).toBe("not_forward");
  });

  it("applies reports of one batch in rank order, so a reordered pair both reach the timeline", () => {
    const p = plan(unit({ status: "queued" }), [report({ status: "success", result: 7 }), report({ status: "processing" })]);
    expect(p.applied.map((a) => a.eventStatus)).toEqual(["processing", "success"]);
    expect(p.outcomes.get(1)).toMatchObject({ status: "success", result: 7 });
  });

  it("writes exactly one terminal event per attempt", () => {
    const p = plan(unit({ status: "processing" }), [
      report({ status: "success" }),
      report({ status: "error", error: { message: "x", retryable: true } }),
      report({ status: "success" }),
    ]);
    expect(p.applied.map((a) => a.eventStatus)).toEqual(["success"]);
    expect(p.ignored).toHaveLength(2);
  });

  it("sends a retryable error back to the backlog with a backoff while attempts are left", () => {
    const p = plan(unit({ status: "processing", attempt: 2 }), [report({ attempt: 2, status: "error", error: { message: "boom", retryable: true } })]);
    const o = p.outcomes.get(1);
    expect(o?.status).toBe("pending");
    expect(o?.notBefore?.getTime()).toBe(now.getTime() + 2_000);
    expect(p.applied[0]?.detail).toMatchObject({ message: "boom", retryable: true, retryAt: new Date(now.getTime() + 2_000).toISOString() });
  });

  it("sends a unit the leader found no agent for back to wait, not ready and not counted, even on its last attempt", () => {
    const p = plan(unit({ status: "dispatched", attempt: 3 }), [
      report({ attempt: 3, status: "error", error: { message: 'no agent consumes kind "render"', retryable: true, noAgent: true } }),
    ]);
    expect(p.outcomes.get(1)).toMatchObject({ status: "pending", notBefore: null, waitForAgent: true });
    expect(p.applied[0]).toMatchObject({ eventStatus: "error", detail: { noAgent: true, counted: false } });
  });

  it("ends in error when the attempts are exhausted", () => {
    const p = plan(unit({ status: "processing", attempt: 3 }), [report({ attempt: 3, status: "error", error: { message: "boom", retryable: true } })]);
    expect(p.outcomes.get(1)).toMatchObject({ status: "error", notBefore: null, lastError: "boom" });
    expect(p.applied[0]?.detail).toMatchObject({ final: true });
  });

  it("ends in error at once for a non-retryable failure", () => {
    const p = plan(unit({ status: "processing" }), [report({ status: "error", error: { message: "bad payload", retryable: false } })]);
    expect(p.outcomes.get(1)?.status).toBe("error");
  });

  it("ignores reports for units that are not in flight or unknown", () => {
    const p = planTransitions(
      new Map([
        [1, unit({ status: "pending" })],
        [2, unit({ id: 2, status: "success" })],
      ]),
      [report({ status: "queued" }), report({ unitId: 2, status: "error" }), report({ unitId: 3 })],
      opts,
    );
    expect(p.applied).toHaveLength(0);
    expect(p.ignored.map((i) => i.reason).sort()).toEqual(["not_in_flight", "not_in_flight", "unknown_unit"]);
  });

  it("caps the retry delay", () => {
    expect([1, 2, 3, 10].map((a) => retryDelayMs(a, 1_000, 5_000))).toEqual([1_000, 2_000, 4_000, 5_000]);
  });

  it("ignores every report of a cancelled attempt as `cancelled`, and lists queued/processing ones to announce again", () => {
    const p = plan(unit({ status: "cancelled" }), [
      report({ status: "processing" }),
      report({ status: "processing", source: "agent:b" }),
      report({ status: "success", result: 1 }),
      report({ status: "queued", source: "leader:l" }),
    ]);
    expect(p.applied).toEqual([]);
    expect(p.outcomes.size).toBe(0);
    expect(p.touched).toEqual([]);
    expect(p.ignored.map((i) => i.reason)).toEqual(["cancelled", "cancelled", "cancelled", "cancelled"]);
    // Once per attempt, however many reports said so.
    expect(p.cancelledRunning).toEqual([{ unitId: 1, attempt: 1 }]);
    // A retried unit's old attempt is stale, as any old attempt is.
    const retried = plan(unit({ status: "dispatched", attempt: 2 }), [report({ attempt: 1, status: "success" })]);
    expect(retried.ignored[0]?.reason).toBe("stale_attempt");
    expect(retried.cancelledRunning).toEqual([]);
  });

  it("property: nothing reported about a cancelled attempt, in any order or number, changes the unit", () => {
    const reported = fc.record({
      status: fc.constantFrom("queued", "processing", "success", "error"),
      attempt: fc.integer({ min: 1, max: 3 }),
      retryable: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 3 }), fc.array(reported, { maxLength: 12 }), (attempt, reports) => {
        const p = plan(
          unit({ status: "cancelled", attempt }),
          reports.map((r) => report({ attempt: r.attempt, status: r.status, ...(r.status === "error" ? { error: { message: "x", retryable: r.retryable } } : {}) })),
        );
        expect(p.applied).toEqual([]);
        expect(p.outcomes.size).toBe(0);
        expect(p.ignored).toHaveLength(reports.length);
        for (const i of p.ignored) expect(i.reason).toBe(i.update.attempt === attempt ? "cancelled" : "stale_attempt");
        const running = reports.some((r) => r.attempt === attempt && (r.status === "queued" || r.status === "processing"));
        expect(p.cancelledRunning).toEqual(running ? [{ unitId: 1, attempt }] : []);
      }),
    );
  });
});
