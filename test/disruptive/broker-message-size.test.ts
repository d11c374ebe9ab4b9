import { afterAll, beforeAll, expect, it } from "vitest";
import type { Handler } from "@rtb/agent";
import { setBrokerMaxMessageSize, startSystem, useTestPlace, waitFor } from "@rtb/testing";

/**
 * The broker's max_message_size is lower than rtb was told (RTB_BROKER_MAX_MESSAGE_BYTES): the
 * broker closes the channel on each larger message. The units concerned still end, as
 * permanent errors naming the cause; the others succeed; nothing stays in flight and nothing
 * is published again forever. Disruptive: it lowers the broker's limit meanwhile (the
 * project's own node: server-control.ts).
 */
const BROKER_MAX = 65_536;
const env = {
  RTB_BROKER_MAX_MESSAGE_BYTES: String(1024 * 1024),
  RTB_SEED_UNITS: "0",
  RTB_DISPATCH_TIMEOUT_MS: "2000",
};
const jsonOf = (bytes: number) => "p".repeat(bytes - 2);
const handlers = new Map<string, Handler>([
  ["measure", async (job) => Buffer.byteLength(JSON.stringify(job.payload))],
  ["produce", async (job) => jsonOf((job.payload as { bytes: number }).bytes)],
]);

let restore: (() => Promise<void>) | undefined;
const place = useTestPlace({ perTest: true, kinds: ["measure", "produce"] });

beforeAll(async () => {
  restore = await setBrokerMaxMessageSize(BROKER_MAX);
});
afterAll(async () => {
  await restore?.();
});

const body = (res: Response): Promise<any> => res.json();

it("a payload or result over the broker's own limit ends its unit as a permanent error; the rest of its message travels", async () => {
  const system = place.own(await startSystem(place, env, { agents: 1, handlers }));
  const res = await system.api.app.request("/units", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify([
      { kind: "measure", payload: jsonOf(100) },
      { kind: "measure", payload: jsonOf(BROKER_MAX + 1_000) },
      { kind: "measure", payload: jsonOf(200) },
      { kind: "produce", payload: { bytes: BROKER_MAX + 1_000 } },
      { kind: "produce", payload: { bytes: 10 } },
    ]),
  });
  expect(res.status).toBe(201);
  const ids: number[] = (await body(res)).units.map((u: { id: number }) => u.id);
  await system.get("/go");
  const units = await waitFor("every unit to end", async () => {
    const all = await Promise.all(ids.map((id) => system.get(`/units/${id}`)));
    return all.every((u) => u.status === "success" || u.status === "error") ? all : null;
  }, 60_000);
  const [small, big, other, bigResult, smallResult] = units;
  expect(small).toMatchObject({ status: "success", result: 100 });
  expect(other).toMatchObject({ status: "success", result: 200 });
  expect(smallResult).toMatchObject({ status: "success" });
  expect(big).toMatchObject({ status: "error", attempt: 1 });
  expect(big.lastError).toMatch(/refused: its dispatch message .* larger than a message may be \(65536 bytes/);
  expect(bigResult).toMatchObject({ status: "error", attempt: 1 });
  expect(bigResult.lastError).toMatch(/result too large to report/);
  const state = await system.get("/");
  expect(state.counts).toMatchObject({ dispatched: 0, queued: 0, processing: 0 });
  expect(state.publishes.refused).toBe(1);
  expect(await (await system.api.app.request("/metrics")).text()).toMatch(/^rtb_units_refused_total\{[^}]*\} 1$/m);
  // Nothing goes round again: a little later the big unit has still had one attempt, and no more publishes.
  const republished = state.publishes.republished;
  await new Promise((r) => setTimeout(r, 3_000));
  expect((await system.get(`/units/${big.id}`)).attempt).toBe(1);
  expect((await system.get("/")).publishes.republished).toBe(republished);
});
