import { jsonBytes } from "@rtb/runtime";

/** A 413 body: which payload no broker message can carry, and the most that fits. */
export interface PayloadTooLarge {
  error: "payload_too_large";
  field: string;
  message: string;
  limit: number;
}

/**
 * The first of `payloads` whose JSON is larger than `maxBytes` (the settings' maxPayloadBytes:
 * RTB_BROKER_MAX_MESSAGE_BYTES less the envelope), as the 413 that refuses the request, its
 * field named by `field(i)`; null when every one fits. A payload no broker message can carry
 * would be dispatched only to be refused. POST /units, /workflows and /schedules answer with it.
 */
export function payloadTooLarge(payloads: readonly unknown[], maxBytes: number, field: (i: number) => string): PayloadTooLarge | null {
  for (const [i, payload] of payloads.entries()) {
    const bytes = jsonBytes(payload);
    if (bytes <= maxBytes) continue;
    return {
      error: "payload_too_large",
      field: field(i),
      message: `the payload's JSON is ${bytes} bytes; at most ${maxBytes} fit in one broker message (RTB_BROKER_MAX_MESSAGE_BYTES less the envelope)`,
      limit: maxBytes,
    };
  }
  return null;
}
