import { beforeAll, describe, expect, it } from "vitest";
import type { ApiService } from "@rtb/api";
import { loadApiConfig } from "@rtb/api";
import { useTestPlace } from "@rtb/testing";
import { startApi } from "./support.ts";

const TOKEN = "s3cret-token-for-tests-0123456789";
const place = useTestPlace();
let api: ApiService;
let readsToo: ApiService;

beforeAll(async () => {
  api = place.own(await startApi(place, { RTB_API_TOKEN: TOKEN, RTB_BROADCAST_MAX_QUEUE: "3" }));
  readsToo = place.own(await startApi(place, { RTB_API_TOKEN: TOKEN, RTB_API_TOKEN_READS: "true" }));
});

const req = async (a: ApiService, path: string, method = "GET", token?: string) => {
  const res = await a.app.request(path, { method, headers: token === undefined ? {} : { Authorization: token } });
  return { status: res.status, body: (await res.json()) as any, challenge: res.headers.get("www-authenticate") };
};

describe("RTB_API_TOKEN", () => {
  it("requires the token for every request that changes state, GET /go included; reads stay open", async () => {
    for (const [path, method] of [["/go", "GET"], ["/go/", "GET"], ["/go", "POST"], ["/pause", "POST"]] as const) {
      const missing = await req(api, path, method);
      expect(missing.status, `${method} ${path}`).toBe(401);
      expect(missing.body).toMatchObject({ error: "unauthorized", field: "Authorization", message: expect.stringContaining("Bearer") });
      expect(missing.challenge).toContain("Bearer");
      const wrong = await req(api, path, method, `Bearer ${TOKEN}x`);
      expect(wrong.status).toBe(401);
      expect(wrong.body.message).toContain("does not match");
    }
    // Nothing was changed by the refused requests.
    expect((await req(api, "/")).body).toMatchObject({ dispatching: false, outstanding: 0 });
    expect((await req(api, "/")).status).toBe(200);
    expect((await req(api, "/next")).status).toBe(200);
    expect((await req(api, "/go", "GET", `bearer ${TOKEN}`)).body).toMatchObject({ dispatching: true, dispatchedNow: 3 });
  });

  it("with RTB_API_TOKEN_READS=true, reads need it too; health probes never do", async () => {
    expect((await req(readsToo, "/")).status).toBe(401);
    expect((await req(readsToo, "/units/1")).status).toBe(401);
    expect((await req(readsToo, "/", "GET", `Bearer ${TOKEN}`)).status).toBe(200);
    expect((await req(readsToo, "/healthz")).status).toBe(200);
    expect((await req(readsToo, "/readyz")).status).toBe(200);
  });

  it("refuses a token too short to be a secret, naming the variable", () => {
    expect(() => loadApiConfig({ RTB_API_TOKEN: "short" })).toThrow(/RTB_API_TOKEN.*at least 16 characters/);
  });
});

describe("POST /pause", () => {
  it("stops dispatching (units in flight stay), survives in the database, and /go resumes", async () => {
    const paused = await req(api, "/pause", "POST", `Bearer ${TOKEN}`);
    expect(paused.status).toBe(200);
    expect(paused.body).toMatchObject({ dispatching: false, changed: true, inFlight: 3, message: expect.stringContaining("paused") });
    expect((await req(api, "/pause/", "POST", `Bearer ${TOKEN}`)).body).toMatchObject({ changed: false, message: "dispatching was already paused" });
    // Shared by replicas: the other api sees it, and a top-up dispatches nothing.
    expect((await req(readsToo, "/", "GET", `Bearer ${TOKEN}`)).body).toMatchObject({ dispatching: false, outstanding: 3 });
    expect(await api.dispatcher.topUp()).toBe(0);
    expect((await req(api, "/pause", "GET", `Bearer ${TOKEN}`)).status).toBe(405);
    expect((await req(api, "/go", "POST", `Bearer ${TOKEN}`)).body).toMatchObject({ dispatching: true, changed: true });
  });
});
