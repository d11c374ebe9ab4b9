import { encodeMessage, TRACEPARENT_LENGTH, type CancelMessage, type DispatchedUnit, type DispatchMessage, type StatusMessage, type UnitAttempt } from "@rtb/protocol";

/**
 * Byte limits of the messages rtb publishes. The broker refuses a message whose body is
 * larger than its `max_message_size` by closing the channel (406 PRECONDITION_FAILED), which
 * fails every publish awaiting a confirm on it; so every batch is cut by bytes as well as by
 * count, and what can never fit is refused before it is sent.
 */

/** Raised before publishing a body larger than RTB_BROKER_MAX_MESSAGE_BYTES: never sent. */
export class MessageTooLargeError extends Error {
  override name = "MessageTooLargeError";
  readonly bytes: number;
  readonly limit: number;
  constructor(bytes: number, limit: number) {
    super(`message of ${bytes} bytes is larger than ${limit} bytes (RTB_BROKER_MAX_MESSAGE_BYTES, or the broker's max_message_size when lower)`);
    this.bytes = bytes;
    this.limit = limit;
  }
}

/** The widest ids and names a message can carry (unitId is a bigint serial, kind is at most 100). */
const WORST_ID = Number.MAX_SAFE_INTEGER;
const WORST_KIND = "k".repeat(100);
const WORST_AT = new Date(0).toISOString();
/** Every traceparent rtb sends is version 00, of this one length. */
const WORST_TRACEPARENT = `00-${"0".repeat(32)}-${"0".repeat(16)}-00`;
if (WORST_TRACEPARENT.length !== TRACEPARENT_LENGTH) throw new Error("WORST_TRACEPARENT is not a traceparent's length");

/**
 * The largest payload (bytes of its JSON) that travels in every message a unit needs: a
 * dispatch message with only this unit (the larger of the two, so it also bounds the job
 * message) with the worst-case envelope: the largest ids, the longest kind, a traceparent.
 */
export function maxPayloadBytes(maxMessageBytes: number): number {
  const envelope = encodeMessage({ v: 1, type: "dispatch", units: [{ unitId: WORST_ID, attempt: WORST_ID, kind: WORST_KIND, payload: null, traceparent: WORST_TRACEPARENT }] });
  return maxMessageBytes - (envelope.length - "null".length);
}

/** The largest result (bytes of its JSON) an agent can report with this source, in one message. */
export function maxResultBytes(maxMessageBytes: number, source: StatusMessage["source"]): number {
  const envelope = encodeMessage({ v: 1, type: "status", source, updates: [{ unitId: WORST_ID, attempt: WORST_ID, status: "success", at: WORST_AT, result: null, traceparent: WORST_TRACEPARENT }] });
  return maxMessageBytes - (envelope.length - "null".length);
}

/** Bytes of a value's JSON as it travels (undefined travels as nothing). */
export function jsonBytes(value: unknown): number {
  const text = JSON.stringify(value);
  return text === undefined ? 0 : Buffer.byteLength(text);
}

/**
 * Cut items into batches of at most `maxCount` whose encoded message stays within
 * `maxBytes`. `overhead` is the message's bytes with an empty list; each item adds its own
 * JSON and a comma. An item that cannot fit even alone goes into a batch of its own, so the
 * publisher refuses just it (MessageTooLargeError) and the caller learns which one it was.
 */
export function splitBySize<T>(items: readonly T[], opts: { maxCount: number; maxBytes: number; overhead: number; size?: (item: T) => number }): T[][] {
  const size = opts.size ?? jsonBytes;
  const batches: T[][] = [];
  let batch: T[] = [];
  let bytes = opts.overhead;
  for (const item of items) {
    const n = size(item);
    const added = batch.length === 0 ? n : n + 1;
    if (batch.length > 0 && (batch.length >= opts.maxCount || bytes + added > opts.maxBytes)) {
      batches.push(batch);
      batch = [];
      bytes = opts.overhead;
    }
    bytes += batch.length === 0 ? n : n + 1;
    batch.push(item);
  }
  if (batch.length > 0) batches.push(batch);
  return batches;
}

/** Dispatch messages of at most `maxCount` units and `maxBytes` each. */
export function dispatchMessages(units: readonly DispatchedUnit[], maxCount: number, maxBytes: number): DispatchMessage[] {
  const overhead = encodeMessage({ v: 1, type: "dispatch", units: [] }).length;
  return splitBySize(units, { maxCount, maxBytes, overhead }).map((batch) => ({ v: 1, type: "dispatch", units: batch }));
}

/** Cancel messages (control exchange) of at most 10,000 attempts and `maxBytes` each. */
export function cancelMessages(units: readonly UnitAttempt[], maxBytes: number): CancelMessage[] {
  const overhead = encodeMessage({ v: 1, type: "cancel", units: [] }).length;
  return splitBySize(units, { maxCount: 10_000, maxBytes, overhead }).map((batch) => ({ v: 1, type: "cancel", units: batch }));
}

/** Bytes a status message's envelope takes around its updates (extras included). */
export function statusOverhead(envelope: Omit<StatusMessage, "updates">): number {
  return encodeMessage({ ...envelope, updates: [] } as StatusMessage).length;
}

