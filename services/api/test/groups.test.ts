import { beforeAll, describe, expect, it } from "vitest";
import type { ApiService } from "@rtb/api";
import { useTestPlace } from "@rtb/testing";
import { call, startApi } from "./support.ts";

// Fair share as an operator sets it: PUT /groups/:name, seen in GET /groups and in GET /next.
const place = useTestPlace();
let api: ApiService;

beforeAll(async () => {
  api = place.own(await startApi(place, { RTB_SEED_UNITS: "0", RTB_BROADCAST_MAX_QUEUE: "100" }));
  await call(api, "/units", "POST", [
    ...Array.from({ length: 6 }, () => ({ kind: "simulate", group: "acme" })),
    ...Array.from({ length: 6 }, () => ({ kind: "simulate", group: "globex" })),
  ]);
});

const nextGroups = async (limit: number) => (await call(api, `/next?limit=${limit}`)).body.units.map((u: any) => u.group);

describe("groups", () => {
  it("GET /groups lists each group's ready units, with the default share", async () => {
    const { status, body } = await call(api, "/groups");
    expect(status).toBe(200);
    expect(body.groups).toEqual([
      { name: "acme", weight: 1, maxInFlight: null, callbackUrl: null, ready: 6, inFlight: 0 },
      { name: "globex", weight: 1, maxInFlight: null, callbackUrl: null, ready: 6, inFlight: 0 },
    ]);
    expect(body.nextCursor).toBeNull();
  });

  it("equal shares alternate; weight 2 gets twice the units", async () => {
    expect(await nextGroups(4)).toEqual(["acme", "globex", "acme", "globex"]);
    const res = await call(api, "/groups/acme", "PUT", { weight: 2 });
    expect(res).toMatchObject({ status: 200, body: { name: "acme", weight: 2, maxInFlight: null } });
    // Scores (in flight + taken) / weight: acme 0.5, 1, 1.5, 2 ...; globex 1, 2 ...; a tie goes to the one served longer ago.
    expect(await nextGroups(6)).toEqual(["acme", "globex", "acme", "acme", "globex", "acme"]);
  });

  it("maxInFlight caps a group (the rest go to the others), and null lifts the cap", async () => {
    await call(api, "/groups/acme", "PUT", { maxInFlight: 1 });
    expect(await nextGroups(4)).toEqual(["acme", "globex", "globex", "globex"]);
    const lifted = await call(api, "/groups/acme", "PUT", { maxInFlight: null });
    expect(lifted.body).toMatchObject({ weight: 2, maxInFlight: null });
  });

  it("a group without units can be set up in advance", async () => {
    expect((await call(api, "/groups/initech", "PUT", { maxInFlight: 3 })).body).toEqual({ name: "initech", weight: 1, maxInFlight: 3, callbackUrl: null, ready: 0, inFlight: 0 });
    const page = await call(api, "/groups?limit=2");
    expect(page.body.groups.map((g: any) => g.name)).toEqual(["acme", "globex"]);
    expect((await call(api, `/groups?limit=2&after=${page.body.nextCursor}`)).body.groups.map((g: any) => g.name)).toEqual(["initech"]);
  });

  it.each([
    [{ weight: 0 }, "weight"],
    [{ weight: "2" }, "weight"],
    [{ maxInFlight: 0 }, "maxInFlight"],
    [{ maxInFlight: 1.5 }, "maxInFlight"],
    [{ colour: "red" }, "colour"],
    [{}, "body"],
  ])("PUT /groups/acme with %j is a 400 naming %s, and changes nothing", async (body, field) => {
    const before = (await call(api, "/groups")).body;
    const res = await call(api, "/groups/acme", "PUT", body);
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ error: "invalid_request", field });
    expect((await call(api, "/groups")).body).toEqual(before);
  });
});
