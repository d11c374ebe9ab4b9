import type { BatchJobMessage, CancelMessage, DispatchMessage, JobMessage, StatusMessage } from "../messages.ts";

type Example = { name: string; summary: string; payload: unknown };

const at = "2026-01-05T10:00:00.250Z";
const agent = { service: "agent" as const, id: "agent-render-1", startedAt: "2026-01-05T09:58:12.031Z" };
const leader = { service: "leader" as const, id: "leader-a", startedAt: "2026-01-05T09:50:00.000Z" };

/** The examples each message carries in the document: the forms docs/protocol.md walks through. */
export function messageExamples(): Record<"dispatch" | "job" | "batchJob" | "status" | "heartbeat" | "cancel", Example[]> {
  return {
    dispatch: [
      {
        name: "twoUnits",
        summary: "Two units, one with a dependency's result",
        payload: {
          v: 1,
          type: "dispatch",
          units: [
            { unitId: 41, attempt: 1, kind: "render", payload: { page: 3 } },
            { unitId: 42, attempt: 2, kind: "email", payload: { to: "a@example.com" }, deps: { render: { url: "https://example.com/3.pdf" } } },
          ],
        } satisfies DispatchMessage,
      },
    ],
    job: [{ name: "oneUnit", summary: "A job of one unit", payload: { v: 1, type: "job", unitId: 41, attempt: 1, kind: "render", payload: { page: 3 } } satisfies JobMessage }],
    batchJob: [
      {
        name: "batch",
        summary: "A batch of three units of one kind",
        payload: {
          v: 1,
          type: "job",
          kind: "render",
          units: [
            { unitId: 51, attempt: 1, payload: { page: 1 } },
            { unitId: 52, attempt: 1, payload: { page: 2 } },
            { unitId: 53, attempt: 3, payload: { page: 3 }, deps: { fetch: { bytes: 1024 } } },
          ],
        } satisfies BatchJobMessage,
      },
    ],
    status: [
      { name: "processing", summary: "An agent started a unit", payload: { v: 1, type: "status", source: agent, updates: [{ unitId: 41, attempt: 1, status: "processing", at }] } satisfies StatusMessage },
      {
        name: "success",
        summary: "A unit succeeded, with its result",
        payload: { v: 1, type: "status", source: agent, updates: [{ unitId: 41, attempt: 1, status: "success", at, result: { url: "https://example.com/3.pdf" } }] } satisfies StatusMessage,
      },
      {
        name: "errors",
        summary: "One retryable error and one permanent error, in one message",
        payload: {
          v: 1,
          type: "status",
          source: agent,
          updates: [
            { unitId: 52, attempt: 1, status: "error", at, error: { message: "upstream answered 503", retryable: true } },
            { unitId: 53, attempt: 3, status: "error", at, error: { message: "payload.page: expected a number", retryable: false } },
          ],
        } satisfies StatusMessage,
      },
      {
        name: "leaderQueued",
        summary: "The leader routed one unit and found no agent for another",
        payload: {
          v: 1,
          type: "status",
          source: leader,
          updates: [
            { unitId: 41, attempt: 1, status: "queued", at },
            { unitId: 60, attempt: 1, status: "error", at, error: { message: 'no agent consumes kind "ocr" (queue jobs.ocr does not exist)', retryable: true, noAgent: true } },
          ],
          utilization: { at, kinds: { render: { ready: 12, consumers: 2 } } },
        } satisfies StatusMessage,
      },
    ],
    heartbeat: [
      { name: "agent", summary: "An agent's heartbeat", payload: { v: 1, type: "status", source: agent, updates: [], counters: { deadLettered: 0 }, kinds: ["render", "email"] } satisfies StatusMessage },
      { name: "leader", summary: "A leader's heartbeat", payload: { v: 1, type: "status", source: leader, updates: [], counters: { deadLettered: 2 } } satisfies StatusMessage },
    ],
    cancel: [{ name: "two", summary: "Two attempts cancelled", payload: { v: 1, type: "cancel", units: [{ unitId: 41, attempt: 1 }, { unitId: 52, attempt: 2 }] } satisfies CancelMessage }],
  };
}
