import { describe, expect, it } from "vitest";
import { DispatchMessage, JobMessage, MAX_AGENT_KINDS, MAX_JOB_UNITS, StatusMessage, encodeMessage, jobUnits, parseJob, parseMessage } from "./messages.ts";

const buf = (v: unknown) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v));

describe("message contracts", () => {
  it("round-trips each message type", () => {
    const dispatch: DispatchMessage = { v: 1, type: "dispatch", units: [{ unitId: 1, attempt: 1, kind: "simulate", payload: { n: 1 } }] };
    const job: JobMessage = { v: 1, type: "job", unitId: 1, attempt: 2, kind: "simulate", payload: null };
    const status: StatusMessage = {
      v: 1,
      type: "status",
      source: { service: "agent", id: "a1" },
      updates: [{ unitId: 1, attempt: 2, status: "error", at: "2026-01-01T00:00:00.000Z", error: { message: "x", retryable: false } }],
    };
    expect(parseMessage(DispatchMessage, encodeMessage(dispatch))).toEqual({ ok: true, value: dispatch });
    expect(parseMessage(JobMessage, encodeMessage(job))).toEqual({ ok: true, value: job });
    expect(parseMessage(StatusMessage, encodeMessage(status))).toEqual({ ok: true, value: status });
  });

  it("rejects a body that is not JSON", () => {
    expect(parseMessage(StatusMessage, buf("{nope"))).toEqual({ ok: false, reason: "body is not valid JSON" });
  });

  it("rejects an unknown version, status or a bad id, naming the path", () => {
    const base = { v: 1, type: "status", source: { service: "agent", id: "a" }, updates: [{ unitId: 1, attempt: 1, status: "queued", at: "2026-01-01T00:00:00Z" }] };
    expect(parseMessage(StatusMessage, buf({ ...base, v: 2 }))).toMatchObject({ ok: false, reason: expect.stringContaining("v") });
    const badStatus = parseMessage(StatusMessage, buf({ ...base, updates: [{ ...base.updates[0], status: "done" }] }));
    expect(badStatus).toMatchObject({ ok: false, reason: expect.stringContaining("updates.0.status") });
    const badId = parseMessage(StatusMessage, buf({ ...base, updates: [{ ...base.updates[0], unitId: -3 }] }));
    expect(badId).toMatchObject({ ok: false, reason: expect.stringContaining("updates.0.unitId") });
    expect(parseMessage(StatusMessage, buf({ ...base, counters: { deadLettered: -1 } }))).toMatchObject({ ok: false, reason: expect.stringContaining("counters.deadLettered") });
  });

  it("accepts a heartbeat: no updates, the sender's lifetime and its counters", () => {
    const beat = { v: 1, type: "status", source: { service: "agent", id: "a", startedAt: "2026-01-01T00:00:00Z" }, updates: [], counters: { deadLettered: 2 } };
    expect(parseMessage(StatusMessage, buf(beat))).toEqual({ ok: true, value: beat });
  });
});

describe("an agent's heartbeat names its kinds", () => {
  const heartbeat = (n: number) => ({
    v: 1,
    type: "status",
    source: { service: "agent", id: "a".repeat(200), startedAt: new Date().toISOString() },
    updates: [],
    counters: { deadLettered: 1_000_000_000 },
    kinds: Array.from({ length: n }, (_, i) => `${i}`.padStart(100, "k")),
  });

  it("takes MAX_AGENT_KINDS kinds of the longest kind, within the smallest message limit (64 KiB); one kind more is refused", () => {
    const full = heartbeat(MAX_AGENT_KINDS);
    expect(StatusMessage.safeParse(full).success).toBe(true);
    expect(encodeMessage(StatusMessage.parse(full)).length).toBeLessThanOrEqual(65_536);
    expect(StatusMessage.safeParse(heartbeat(MAX_AGENT_KINDS + 1)).success).toBe(false);
  });

  it(`reads a job of either form, a batch of up to MAX_JOB_UNITS (${MAX_JOB_UNITS}) units, naming the field of a bad one`, () => {
    const single = { v: 1, type: "job", unitId: 7, attempt: 1, kind: "k", payload: { a: 1 } };
    expect(parseJob(buf(single))).toEqual({ ok: true, value: single });
    const units = (n: number) => Array.from({ length: n }, (_, i) => ({ unitId: i + 1, attempt: 1, payload: null }));
    const full = parseJob(buf({ v: 1, type: "job", kind: "k", units: units(MAX_JOB_UNITS) }));
    expect(full.ok && jobUnits(full.value)).toHaveLength(MAX_JOB_UNITS);
    expect(parseJob(buf({ v: 1, type: "job", kind: "k", units: units(MAX_JOB_UNITS + 1) }))).toMatchObject({ ok: false, reason: expect.stringContaining("units") });
    expect(parseJob(buf({ v: 1, type: "job", kind: "k", units: [] }))).toMatchObject({ ok: false, reason: expect.stringContaining("units") });
    expect(parseJob(buf({ v: 1, type: "job", kind: "k", units: [{ unitId: 0, attempt: 1 }] }))).toMatchObject({ ok: false, reason: expect.stringContaining("units.0.unitId") });
    expect(jobUnits(single as JobMessage)).toEqual([{ unitId: 7, attempt: 1, payload: { a: 1 } }]);
  });

  it("carries a unit's traceparent (W3C, version 00) on dispatched units, jobs and status updates, and reads a malformed one as absent", () => {
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const single = { v: 1, type: "job", unitId: 7, attempt: 1, kind: "k", payload: null, traceparent };
    expect(jobUnits((parseJob(buf(single)) as { value: JobMessage }).value)).toEqual([{ unitId: 7, attempt: 1, payload: null, traceparent }]);
    const batch = parseJob(buf({ v: 1, type: "job", kind: "k", units: [{ unitId: 1, attempt: 1, payload: null, traceparent }] }));
    expect(batch.ok && jobUnits(batch.value)[0]!.traceparent).toBe(traceparent);
    const dispatch = { v: 1, type: "dispatch", units: [{ unitId: 1, attempt: 1, kind: "k", payload: null, traceparent }] };
    expect(parseMessage(DispatchMessage, buf(dispatch))).toEqual({ ok: true, value: dispatch });
    const status = { v: 1, type: "status", source: { service: "agent", id: "a" }, updates: [{ unitId: 1, attempt: 1, status: "processing", at: "2026-01-01T00:00:00Z", traceparent }] };
    expect(parseMessage(StatusMessage, buf(status))).toEqual({ ok: true, value: status });
    // A malformed one never costs the report (nor the message's other updates): it is dropped.
    const zeros = `00-${"0".repeat(32)}-00f067aa0ba902b7-01`;
    const zeroSpan = `00-4bf92f3577b34da6a3ce929d0e0e4736-${"0".repeat(16)}-01`;
    for (const bad of ["nonsense", traceparent.toUpperCase(), `${traceparent}-extra`, traceparent.replace(/^00/, "01"), "", null, 42, zeros, zeroSpan]) {
      const unit = { ...status.updates[0], traceparent: bad };
      const other = { unitId: 2, attempt: 1, status: "success", at: "2026-01-01T00:00:00Z", result: 1 };
      const parsed = parseMessage(StatusMessage, buf({ ...status, updates: [unit, other] }));
      expect(parsed.ok, String(bad)).toBe(true);
      const updates = (parsed as { value: StatusMessage }).value.updates;
      expect(updates[0]!.traceparent, String(bad)).toBeUndefined();
      expect(updates[1]).toEqual(other);
      const job = parseJob(buf({ ...single, traceparent: bad }));
      expect(job.ok && jobUnits(job.value)[0]!.traceparent, String(bad)).toBeUndefined();
      expect(parseMessage(DispatchMessage, buf({ ...dispatch, units: [{ ...dispatch.units[0], traceparent: bad }] })).ok, String(bad)).toBe(true);
    }
  });
});
