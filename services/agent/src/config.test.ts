import { describe, expect, it } from "vitest";
import { ConfigError } from "@rtb/runtime";
import { loadAgentConfig } from "./config.ts";

function problems(env: Record<string, string>) {
  try {
    loadAgentConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error("expected a ConfigError");
}

describe("agent configuration", () => {
  it("refuses a handler timeout that is not below the api's processing timeout, when both are in the environment", () => {
    const [p] = problems({ RTB_AGENT_TIMEOUT_MS: "60000", RTB_PROCESSING_TIMEOUT_MS: "60000" });
    expect(p).toMatchObject({ variable: "RTB_AGENT_TIMEOUT_MS", value: "60000" });
    expect(p!.expected).toMatch(/below RTB_PROCESSING_TIMEOUT_MS/);
  });

  it("accepts a handler timeout below it, and does not check when the api's setting is not in the environment", () => {
    expect(loadAgentConfig({ RTB_AGENT_TIMEOUT_MS: "59999", RTB_PROCESSING_TIMEOUT_MS: "60000" }).RTB_AGENT_TIMEOUT_MS).toBe(59_999);
    expect(loadAgentConfig({ RTB_AGENT_TIMEOUT_MS: "600000" }).RTB_AGENT_TIMEOUT_MS).toBe(600_000);
  });

  it("refuses a work range upside down", () => {
    expect(problems({ RTB_AGENT_WORK_MIN_MS: "10", RTB_AGENT_WORK_MAX_MS: "5" })[0]?.variable).toBe("RTB_AGENT_WORK_MAX_MS");
  });
});
