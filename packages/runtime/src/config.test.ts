import { describe, expect, it } from "vitest";
import { z } from "zod";
import { ConfigError, bool, duration, hostPort, int, loadConfig, kindList, oneOf, ratio, secret } from "./config.ts";
import { brokerConfig, brokerUrl } from "./broker-config.ts";
import { MAX_AGENT_KINDS } from "@rtb/protocol";

const schema = z.object({
  RTB_DB_HOST: hostPort("localhost:5432", 5432),
  RTB_BROADCAST_MAX_QUEUE: int(50, { min: 1 }),
  RTB_AGENT_ERROR_RATE: ratio(0.1),
  RTB_FLAG: bool(false),
  RTB_KIND: oneOf(["classic", "quorum"], "classic"),
  RTB_AGENT_KINDS: kindList("simulate"),
});

function problem(env: Record<string, string>) {
  try {
    loadConfig(schema, env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error("expected a ConfigError");
}

describe("loadConfig", () => {
  it("applies the documented defaults", () => {
    expect(loadConfig(schema, {})).toEqual({
      RTB_DB_HOST: { host: "localhost", port: 5432 },
      RTB_BROADCAST_MAX_QUEUE: 50,
      RTB_AGENT_ERROR_RATE: 0.1,
      RTB_FLAG: false,
      RTB_KIND: "classic",
      RTB_AGENT_KINDS: ["simulate"],
    });
  });

  it("parses host:port, a bare host and IPv6", () => {
    expect(loadConfig(schema, { RTB_DB_HOST: "postgres:6543" }).RTB_DB_HOST).toEqual({ host: "postgres", port: 6543 });
    expect(loadConfig(schema, { RTB_DB_HOST: "db.internal" }).RTB_DB_HOST).toEqual({ host: "db.internal", port: 5432 });
    expect(loadConfig(schema, { RTB_DB_HOST: "[::1]:5433" }).RTB_DB_HOST).toEqual({ host: "::1", port: 5433 });
  });

  it("treats an empty value as unset", () => {
    expect(loadConfig(schema, { RTB_BROADCAST_MAX_QUEUE: "" }).RTB_BROADCAST_MAX_QUEUE).toBe(50);
  });

  it("names the variable, the value and what is expected", () => {
    const err = problem({ RTB_BROADCAST_MAX_QUEUE: "lots" });
    expect(err.problems).toEqual([{ variable: "RTB_BROADCAST_MAX_QUEUE", value: "lots", expected: "expected an integer" }]);
    expect(err.message).toContain('RTB_BROADCAST_MAX_QUEUE="lots"');
  });

  it("reports every bad variable at once", () => {
    const err = problem({ RTB_DB_HOST: "db:99999", RTB_AGENT_ERROR_RATE: "2", RTB_FLAG: "maybe", RTB_KIND: "stream", RTB_AGENT_KINDS: "a b" });
    expect(err.problems.map((p) => p.variable).sort()).toEqual(["RTB_AGENT_ERROR_RATE", "RTB_AGENT_KINDS", "RTB_DB_HOST", "RTB_FLAG", "RTB_KIND"]);
  });

  it("takes up to MAX_AGENT_KINDS kinds in RTB_AGENT_KINDS, and refuses one more, naming the variable", () => {
    const kinds = (n: number) => Array.from({ length: n }, (_, i) => `kind-${i}`).join(",");
    expect(loadConfig(schema, { RTB_AGENT_KINDS: kinds(MAX_AGENT_KINDS) }).RTB_AGENT_KINDS).toHaveLength(MAX_AGENT_KINDS);
    const err = problem({ RTB_AGENT_KINDS: kinds(MAX_AGENT_KINDS + 1) });
    expect(err.problems.map((p) => p.variable)).toEqual(["RTB_AGENT_KINDS"]);
    expect(err.message).toContain(`at most ${MAX_AGENT_KINDS} kinds`);
  });

  it("rejects values below the minimum", () => {
    expect(problem({ RTB_BROADCAST_MAX_QUEUE: "0" }).problems[0]?.expected).toBe("expected an integer >= 1");
  });

  it("never shows a secret's value: a marked setting, or one named like a credential, shows its length only", () => {
    const secrets = z.object({
      RTB_KEYPHRASE: secret(z.string().min(16, { message: "expected at least 16 characters" })),
      RTB_DB_PASSWORD: z.string().max(3, { message: "expected at most 3 characters" }),
      RTB_BROKER_PASSWORD: z.coerce.number({ message: "expected a number" }),
    });
    let err: ConfigError | undefined;
    try {
      loadConfig(secrets, { RTB_KEYPHRASE: "short-secret", RTB_DB_PASSWORD: "hunter2", RTB_BROKER_PASSWORD: "s3cr3t" });
    } catch (e) {
      err = e as ConfigError;
    }
    expect(err).toBeInstanceOf(ConfigError);
    for (const value of ["short-secret", "hunter2", "s3cr3t"]) {
      expect(err!.message).not.toContain(value);
      expect(JSON.stringify(err!.problems)).not.toContain(value);
    }
    expect(err!.message).toContain("RTB_KEYPHRASE=<12 characters, hidden>: expected at least 16 characters");
    expect(err!.message).toContain("RTB_DB_PASSWORD=<7 characters, hidden>");
    expect(err!.problems).toContainEqual({ variable: "RTB_BROKER_PASSWORD", value: "<6 characters, hidden>", expected: "expected a number" });
    // Constructed by hand (a service's own check), a credential's name is enough.
    expect(new ConfigError([{ variable: "RTB_API_TOKEN", value: "abc", expected: "x" }]).message).toContain("RTB_API_TOKEN=<3 characters, hidden>");
  });

  it("builds an AMQP URL with escaped credentials and vhost", () => {
    const c = loadConfig(z.object(brokerConfig), { RTB_BROKER_HOST: "rabbit", RTB_BROKER_USER: "u@x", RTB_BROKER_PASSWORD: "p/w", RTB_BROKER_VHOST: "/" });
    expect(brokerUrl(c)).toBe("amqp://u%40x:p%2Fw@rabbit:5672/%2F?heartbeat=15");
  });

  it("reads RTB_BROKER_HOST as a list of host:port, one entry being the single host of old", () => {
    const hosts = (value: string) => loadConfig(z.object(brokerConfig), { RTB_BROKER_HOST: value }).RTB_BROKER_HOST;
    expect(loadConfig(z.object(brokerConfig), {}).RTB_BROKER_HOST).toEqual([{ host: "localhost", port: 5672 }]);
    expect(hosts("rabbit:5673")).toEqual([{ host: "rabbit", port: 5673 }]);
    expect(hosts("rabbit-1:5672, rabbit-2 ,[::1]:5674")).toEqual([
      { host: "rabbit-1", port: 5672 },
      { host: "rabbit-2", port: 5672 },
      { host: "::1", port: 5674 },
    ]);
  });

  it("refuses a bad RTB_BROKER_HOST entry, naming the variable and the entry", () => {
    const refusal = (value: string) => {
      try {
        loadConfig(z.object(brokerConfig), { RTB_BROKER_HOST: value });
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        expect((err as ConfigError).problems.map((p) => p.variable)).toEqual(["RTB_BROKER_HOST"]);
        return (err as ConfigError).message;
      }
      throw new Error(`expected ${value} to be refused`);
    };
    expect(refusal("rabbit-1:5672,rabbit-2:99999")).toContain('RTB_BROKER_HOST="rabbit-1:5672,rabbit-2:99999": entry 2 of 2, "rabbit-2:99999", is not host:port');
    expect(refusal("rabbit-1,,rabbit-3")).toContain('entry 2 of 3, "", is not host:port');
    expect(refusal("rabbit-1,rabbit-2,")).toContain('entry 3 of 3, "", is not host:port');
    expect(refusal("rabbit-1,rabbit-1:5672")).toContain('entry 2 of 2, "rabbit-1:5672", is listed twice');
    expect(refusal("::1")).toContain('RTB_BROKER_HOST="::1": "::1", is not host:port: expected host:port, or several separated by commas');
  });

  it("builds a script's one-off URL on the first host listed", () => {
    const c = loadConfig(z.object(brokerConfig), { RTB_BROKER_HOST: "[::1]:5673,rabbit-2" });
    expect(brokerUrl(c)).toBe("amqp://guest:guest@[::1]:5673/%2F?heartbeat=15");
  });

  it("reads a duration as a number and one unit, or 0, and names the variable otherwise", () => {
    const d = z.object({ RTB_RETENTION: duration("7d") });
    expect(loadConfig(d, {}).RTB_RETENTION).toEqual({ text: "7d", ms: 7 * 86_400_000 });
    expect(loadConfig(d, { RTB_RETENTION: "90s" }).RTB_RETENTION).toEqual({ text: "90s", ms: 90_000 });
    expect(loadConfig(d, { RTB_RETENTION: "30m" }).RTB_RETENTION.ms).toBe(1_800_000);
    expect(loadConfig(d, { RTB_RETENTION: "12h" }).RTB_RETENTION.ms).toBe(43_200_000);
    expect(loadConfig(d, { RTB_RETENTION: "0" }).RTB_RETENTION).toEqual({ text: "0", ms: 0 });
    for (const bad of ["7", "7 days", "1.5h", "-1d", "5w", "3651d", "1h30m", "0s0"]) {
      let caught: unknown;
      try {
        loadConfig(d, { RTB_RETENTION: bad });
      } catch (e) {
        caught = e;
      }
      expect(caught, bad).toBeInstanceOf(ConfigError);
      expect((caught as ConfigError).message).toContain(`RTB_RETENTION=${JSON.stringify(bad)}: expected a duration`);
    }
  });
});
