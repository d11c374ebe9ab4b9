import { expect, it } from "vitest";
import { encodeMessage } from "@rtb/protocol";
import { dispatchMessages, maxPayloadBytes, maxResultBytes, splitBySize } from "./index.ts";

const limit = 65_536;
const traceparent = `00-${"a".repeat(32)}-${"b".repeat(16)}-01`;
const worst = { unitId: Number.MAX_SAFE_INTEGER, attempt: Number.MAX_SAFE_INTEGER, kind: "k".repeat(100), traceparent };
/** A JSON string payload whose JSON takes exactly `bytes` bytes. */
const payloadOf = (bytes: number) => "p".repeat(bytes - 2);

it("maxPayloadBytes is exact: the worst-case dispatch message with such a payload is the limit, one byte more is over", () => {
  const max = maxPayloadBytes(limit);
  const at = encodeMessage({ v: 1, type: "dispatch", units: [{ ...worst, payload: payloadOf(max) }] });
  expect(at.length).toBe(limit);
  const job = encodeMessage({ v: 1, type: "job", ...worst, payload: payloadOf(max) });
  expect(job.length).toBeLessThanOrEqual(limit);
  expect(encodeMessage({ v: 1, type: "dispatch", units: [{ ...worst, payload: payloadOf(max + 1) }] }).length).toBe(limit + 1);
});

it("maxResultBytes is exact for the sender's source", () => {
  const source = { service: "agent" as const, id: "agent-1", startedAt: new Date().toISOString() };
  const max = maxResultBytes(limit, source);
  const body = (n: number) => encodeMessage({ v: 1, type: "status", source, updates: [{ unitId: worst.unitId, attempt: worst.attempt, status: "success", at: new Date().toISOString(), result: payloadOf(n), traceparent }] });
  expect(body(max).length).toBe(limit);
  expect(body(max + 1).length).toBe(limit + 1);
});

it("dispatch messages are cut by count and by bytes, every one within the limit, order kept", () => {
  const units = Array.from({ length: 30 }, (_, i) => ({ unitId: i + 1, attempt: 1, kind: "k", payload: payloadOf(10_000) }));
  const messages = dispatchMessages(units, 100, limit);
  expect(messages.length).toBe(5); // six units of ~10 KB per 64 KiB message
  for (const m of messages) expect(encodeMessage(m).length).toBeLessThanOrEqual(limit);
  expect(messages.flatMap((m) => m.units.map((u) => u.unitId))).toEqual(units.map((u) => u.unitId));
  // Small units: the count is the bound.
  expect(dispatchMessages(units.map((u) => ({ ...u, payload: {} })), 7, limit).map((m) => m.units.length)).toEqual([7, 7, 7, 7, 2]);
});

it("an item too large for any message goes alone, so the publisher refuses just it", () => {
  const batches = splitBySize(["a", "b".repeat(100), "c"], { maxCount: 10, maxBytes: 50, overhead: 10 });
  expect(batches).toEqual([["a"], ["b".repeat(100)], ["c"]]);
});

it("fills a message exactly to the limit", () => {
  // overhead 2 ("[]"), items of 4 bytes ("\"ab\""), commas: 2 + 4n + (n - 1) <= 21 takes n = 4.
  const items = Array.from({ length: 9 }, () => "ab");
  const batches = splitBySize(items, { maxCount: 100, maxBytes: 21, overhead: 2 });
  expect(batches.map((b) => b.length)).toEqual([4, 4, 1]);
  expect(Buffer.byteLength(JSON.stringify(batches[0]))).toBe(21);
});
