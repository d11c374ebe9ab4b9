import { describe, expect, expectTypeOf, it } from "vitest";
import { z } from "zod";
import { ConfigError } from "@rtb/runtime";
import { defineHandler, describeFailure, PermanentJobError, type Job } from "./handler.ts";
import { servedHandlers } from "./run-agent.ts";

const job = (payload: unknown): Job => ({ unitId: 7, attempt: 1, kind: "render", payload, deps: {}, spawn: () => {}, signal: new AbortController().signal, logger: undefined as never });

describe("defineHandler", () => {
  const render = defineHandler({
    payload: z.object({ scene: z.string(), frames: z.number().int().min(1).default(1), size: z.object({ w: z.number() }).optional() }),
    run: async ({ payload, unitId, attempt, kind }) => {
      expectTypeOf(payload).toEqualTypeOf<{ scene: string; frames: number; size?: { w: number } | undefined }>();
      return { scene: payload.scene, frames: payload.frames, unitId, attempt, kind };
    },
  });

  it("gives run the payload as the schema parsed it, with the job's other fields", async () => {
    expect(await render(job({ scene: "hall" }))).toEqual({ scene: "hall", frames: 1, unitId: 7, attempt: 1, kind: "render" });
  });

  it("ends the attempt as a permanent error naming each field the schema refused", async () => {
    const err = await render(job({ frames: 0, size: { w: "x" } })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PermanentJobError);
    expect(describeFailure(err)).toEqual({
      message: expect.stringMatching(/^payload\.scene: .*expected string.*; payload\.frames: .*; payload\.size\.w: .*expected number/),
      retryable: false,
    });
    expect((await render(job(null)).catch((e: Error) => e.message))).toMatch(/^payload: .*expected object/);
  });

  it("cuts a message to 4,000 UTF-16 code units, never inside a surrogate pair", () => {
    expect(describeFailure(new Error("x".repeat(4_000))).message).toHaveLength(4_000);
    expect(describeFailure(new Error("x".repeat(4_001))).message).toBe("x".repeat(4_000));
    // An emoji (two code units) across the limit is left out whole, not halved.
    const across = describeFailure(new Error(`${"x".repeat(3_999)}😀tail`)).message;
    expect(across).toBe("x".repeat(3_999));
    const within = describeFailure(new Error(`${"x".repeat(3_998)}😀tail`)).message;
    expect(within).toBe(`${"x".repeat(3_998)}😀`);
    expect(within).toHaveLength(4_000);
  });

  it("keeps what run throws as it is: retryable unless permanent", async () => {
    const flaky = defineHandler({ payload: z.unknown(), run: async () => Promise.reject(new Error("disk full")) });
    expect(describeFailure(await flaky(job(1)).catch((e: unknown) => e))).toEqual({ message: "disk full", retryable: true });
  });
});

describe("servedHandlers (RTB_AGENT_KINDS)", () => {
  const h = async () => null;

  it("serves every handler when RTB_AGENT_KINDS is unset or empty", () => {
    expect([...servedHandlers({ render: h, thumb: h }, {}).keys()]).toEqual(["render", "thumb"]);
    expect([...servedHandlers(new Map([["render", h]]), { RTB_AGENT_KINDS: "" }).keys()]).toEqual(["render"]);
  });

  it("serves only the kinds it lists", () => {
    expect([...servedHandlers({ render: h, thumb: h }, { RTB_AGENT_KINDS: " thumb " }).keys()]).toEqual(["thumb"]);
  });

  it("refuses, naming the variable, a listed kind without a handler", () => {
    let err: unknown;
    try {
      servedHandlers({ render: h }, { RTB_AGENT_KINDS: "render,paint" });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems).toEqual([{ variable: "RTB_AGENT_KINDS", value: "render,paint", expected: "kinds with a handler (render); no handler for paint" }]);
  });

  it("refuses a handler under a name that is not a kind", () => {
    expect(() => servedHandlers({ "a b": h }, {})).toThrow(/handler kind "a b": expected 1 to 100/);
  });
});
