import { describe, expect, it } from "vitest";
import { ConfigError } from "@rtb/runtime";
import { MAX_CALLBACK_URL_LENGTH } from "@rtb/protocol";
import { loadApiConfig } from "./config.ts";
import { callbackUrlProblem } from "./callback-policy.ts";
import { backoff } from "./callback-deliverer.ts";

const secret = `whsec_${Buffer.alloc(32, 7).toString("base64")}`;
const allowed = (hosts: string) => loadApiConfig({ RTB_WEBHOOK_ALLOWED_HOSTS: hosts, RTB_WEBHOOK_SECRET: secret }).RTB_WEBHOOK_ALLOWED_HOSTS;
const problems = (env: Record<string, string>) => {
  try {
    loadApiConfig(env);
    return [];
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return err.problems.map((p) => p.variable);
  }
};

describe("RTB_WEBHOOK_ALLOWED_HOSTS", () => {
  it.each([
    ["hooks.example.com", "https://hooks.example.com/x", true],
    ["hooks.example.com", "http://HOOKS.example.com:8080/x", true],
    ["hooks.example.com", "https://evil.com/?hooks.example.com", false],
    ["hooks.example.com", "https://hooks.example.com.evil.com/", false],
    ["hooks.example.com:8443", "https://hooks.example.com:8443/", true],
    ["hooks.example.com:8443", "https://hooks.example.com/", false],
    ["hooks.example.com:443", "https://hooks.example.com/", true],
    ["hooks.example.com:80", "https://hooks.example.com/", false],
    ["*.example.com", "https://a.b.example.com/", true],
    ["*.example.com", "https://example.com/", false],
    ["*.example.com", "https://badexample.com/", false],
    ["127.0.0.1", "http://127.1/", true],
    ["[::1]:8080", "http://[::1]:8080/", true],
    ["[::1]:8080", "http://[::1]:8081/", false],
    ["a.test,b.test", "http://b.test/", true],
    // The forms a URL's host can take are read as fetch reads them (the WHATWG parser), then compared.
    ["127.0.0.1", "http://2130706433/", true],
    ["127.0.0.1", "http://0x7f.0.0.1/", true],
    ["hooks.test", "http://2130706433/", false],
    ["hooks.test", "http://hooks%2Etest/", true],
    ["hooks.test", "http://hooks.test./", false],
    ["hooks.test", "http://evil.test\\@hooks.test/", false],
    ["hooks.test", "http://evil.test\\hooks.test/", false],
    ["hooks.test", "http://hooks.test#@evil.test/", true],
    ["127.0.0.1", "http://[::ffff:127.0.0.1]/", false],
    ["hooks.test", "http://höoks.test/", false],
    ["xn--hoks-5qa.test", "http://höoks.test/", true],
  ])("%s allows %s: %s", (hosts, url, ok) => {
    const problem = callbackUrlProblem(allowed(hosts), url);
    if (ok) expect(problem).toBeNull();
    else expect(problem).toContain("not in RTB_WEBHOOK_ALLOWED_HOSTS");
  });

  it("refuses what is not a URL to call, or not within the length", () => {
    const hosts = allowed("hooks.test");
    expect(callbackUrlProblem(hosts, "gopher://hooks.test/")).toContain("http or https");
    expect(callbackUrlProblem(hosts, "http://a:b@hooks.test/")).toContain("user:password");
    expect(callbackUrlProblem(hosts, "hooks.test/x")).toContain("absolute");
    const base = "http://hooks.test/";
    expect(callbackUrlProblem(hosts, base + "x".repeat(MAX_CALLBACK_URL_LENGTH - base.length))).toBeNull();
    expect(callbackUrlProblem(hosts, base + "x".repeat(MAX_CALLBACK_URL_LENGTH - base.length + 1))).toContain(`at most ${MAX_CALLBACK_URL_LENGTH}`);
    expect(callbackUrlProblem([], "http://hooks.test/")).toContain("callbacks are off");
  });

  it.each(["*", "a,,b", "http://hooks.test", "hooks.test/path", "user@hooks.test", "hooks.test:99999", "*.", "a.*.test"])("%j stops the api at start, naming the variable", (hosts) => {
    expect(problems({ RTB_WEBHOOK_ALLOWED_HOSTS: hosts, RTB_WEBHOOK_SECRET: secret })).toEqual(["RTB_WEBHOOK_ALLOWED_HOSTS"]);
  });
});

describe("RTB_WEBHOOK_SECRET", () => {
  it("is required, as whsec_ and base64 of 24 to 64 bytes, once callbacks are on; ignored while they are off", () => {
    expect(problems({ RTB_WEBHOOK_ALLOWED_HOSTS: "hooks.test" })).toEqual(["RTB_WEBHOOK_SECRET"]);
    expect(problems({ RTB_WEBHOOK_ALLOWED_HOSTS: "hooks.test", RTB_WEBHOOK_SECRET: "not-a-key" })).toEqual(["RTB_WEBHOOK_SECRET"]);
    expect(problems({ RTB_WEBHOOK_ALLOWED_HOSTS: "hooks.test", RTB_WEBHOOK_SECRET: `whsec_${Buffer.alloc(16).toString("base64")}` })).toEqual(["RTB_WEBHOOK_SECRET"]);
    expect(problems({ RTB_WEBHOOK_ALLOWED_HOSTS: "hooks.test", RTB_WEBHOOK_SECRET: secret })).toEqual([]);
    expect(problems({ RTB_WEBHOOK_SECRET: "PLACEHOLDER-unused" })).toEqual([]);
  });

  it("never shows its value in the error", () => {
    expect(() => loadApiConfig({ RTB_WEBHOOK_ALLOWED_HOSTS: "hooks.test", RTB_WEBHOOK_SECRET: "whsec_short!" })).toThrow(/RTB_WEBHOOK_SECRET=<12 characters, hidden>/);
  });

  it.each([["RTB_WEBHOOK_MAX_ATTEMPTS", "0"], ["RTB_WEBHOOK_TIMEOUT_MS", "10"], ["RTB_WEBHOOK_CONCURRENCY", "0"], ["RTB_WEBHOOK_HOST_CONCURRENCY", "0"], ["RTB_WEBHOOK_HOST_CONCURRENCY", "1001"], ["RTB_WEBHOOK_BACKOFF_MS", "x"]])("%s=%s stops the api at start", (variable, value) => {
    expect(problems({ [variable]: value })).toEqual([variable]);
  });
});

describe("backoff", () => {
  it("doubles from the base, 50 to 100% of it, up to the cap", () => {
    const s = { backoffMs: 1_000, backoffMaxMs: 10_000 };
    for (let i = 0; i < 50; i++) {
      const [a, b, c, far] = [backoff(1, s), backoff(2, s), backoff(3, s), backoff(40, s)];
      expect(a).toBeGreaterThanOrEqual(500);
      expect(a).toBeLessThanOrEqual(1_000);
      expect(b).toBeGreaterThanOrEqual(1_000);
      expect(b).toBeLessThanOrEqual(2_000);
      expect(c).toBeGreaterThanOrEqual(2_000);
      expect(c).toBeLessThanOrEqual(4_000);
      expect(far).toBeGreaterThanOrEqual(5_000);
      expect(far).toBeLessThanOrEqual(10_000);
    }
  });
});
