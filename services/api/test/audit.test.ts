import { beforeAll, describe, expect, it } from "vitest";
import { loadApiConfig, startApiService, type ApiService } from "@rtb/api";
import { capturingLogger, useTestPlace } from "@rtb/testing";
import { NEVER } from "./support.ts";

// The api logs who did what: one info line per operator action, with the caller, never the token.
const TOKEN = "audit-token-0123456789abcdef";
const place = useTestPlace({ kinds: ["render"] });
const { logger, lines } = capturingLogger("api", "info");
let api: ApiService;
let base: string;

beforeAll(async () => {
  const config = loadApiConfig({ ...place.env, RTB_API_HOST: "127.0.0.1:0", RTB_SEED_UNITS: "2", RTB_RECONCILE_CRON: NEVER, RTB_API_TOKEN: TOKEN });
  api = place.own(await startApiService(config, logger, { listen: true }));
  base = `http://127.0.0.1:${api.address!.port}`;
});

const audits = () => lines.filter((l) => typeof l.action === "string");
const send = (method: string, path: string, init: { token?: boolean; body?: unknown; headers?: Record<string, string> } = {}) =>
  fetch(base + path, {
    method,
    headers: {
      "user-agent": "audit-test/1",
      ...(init.token === false ? {} : { authorization: `Bearer ${TOKEN}` }),
      ...(init.body === undefined ? {} : { "content-type": "application/json" }),
      ...init.headers,
    },
    ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
  });

describe("the audit log", () => {
  it("logs go, pause, retry, cancel, redrive and PUT /groups with the method, path, unit or group and the caller", async () => {
    // Before /go, so unit 1 is still pending.
    expect((await send("POST", "/units/1/cancel")).status).toBe(200);
    expect((await send("POST", "/units/1/retry")).status).toBe(200);
    expect((await send("POST", "/go", { headers: { "x-forwarded-for": "203.0.113.7" } })).status).toBe(200);
    expect((await send("POST", "/pause")).status).toBe(200);
    expect((await send("POST", "/units/redrive")).status).toBe(200);
    expect((await send("PUT", "/groups/team-a", { body: { weight: 2 } })).status).toBe(200);
    await send("GET", "/units"); // a read: not logged

    const got = audits();
    expect(got.map((l) => l.action)).toEqual(["cancel", "retry", "go", "pause", "redrive", "set_group_share"]);
    expect(got[2]).toMatchObject({ level: 30, method: "POST", path: "/go", status: 200, caller: { address: expect.stringMatching(/127\.0\.0\.1/), forwardedFor: "203.0.113.7", userAgent: "audit-test/1", tokenPresented: true } });
    expect(got[0]).toMatchObject({ action: "cancel", unitId: 1, path: "/units/1/cancel" });
    expect(got[5]).toMatchObject({ action: "set_group_share", group: "team-a", method: "PUT" });
    expect(JSON.stringify(lines)).not.toContain(TOKEN);
  });

  it("logs refused attempts too: who tried without the token", async () => {
    lines.length = 0;
    expect((await send("GET", "/go", { token: false })).status).toBe(401);
    expect(audits()).toEqual([expect.objectContaining({ action: "go", method: "GET", status: 401, caller: expect.objectContaining({ tokenPresented: false }) })]);
  });
});
