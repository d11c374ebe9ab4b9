import { expect, it } from "vitest";
import { checkTallies, checkTimelines } from "@rtb/db";
import { metricValue, parsePrometheusText } from "@rtb/runtime";
import { loadAgentConfig, startAgent } from "@rtb/agent";
import { startSystem, testLogger, useTestPlace, waitFor, type System } from "@rtb/testing";

/**
 * Units of a kind no agent consumes yet (enqueued before their agent starts, the natural
 * order) wait in the backlog without using attempts, are shown in GET / and the metrics, and
 * run as soon as an agent of their kind announces itself. RTB_NO_AGENT_TIMEOUT_MS bounds the wait.
 */
const place = useTestPlace({ kinds: ["render", "nobody"] });

type Event = { status: string; source: string; detail: Record<string, unknown> | null };

async function enqueue(system: System, body: object): Promise<number> {
  const res = await system.api.app.request("/units", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  expect(res.status).toBe(201);
  return ((await res.json()) as { unit: { id: number } }).unit.id;
}

it("waits without using attempts while no agent consumes its kind, says so, and runs when one starts", async () => {
  const system = place.own(await startSystem(place, { RTB_SEED_UNITS: "0", RTB_HEARTBEAT_MS: "200", RTB_RETRY_BACKOFF_MS: "10" }, { agents: 1 }));
  const id = await enqueue(system, { kind: "render", maxAttempts: 1, payload: { scene: 7 } });
  await system.get("/go");

  const waiting = await waitFor("the unit to wait for an agent", async () => {
    const u = await system.get(`/units/${id}`);
    return u.status === "pending" && u.waitingForAgentSince ? u : null;
  });
  // It does not go round the broker again and again while it waits: one dispatch, one return.
  await new Promise((r) => setTimeout(r, 1_000));
  const still = await system.get(`/units/${id}`);
  expect(still).toMatchObject({ status: "pending", attempt: 1, maxAttempts: 2, notBefore: null, waitingForAgentSince: waiting.waitingForAgentSince });
  expect(still.events.map((e: Event) => e.status)).toEqual(["dispatched", "error"]);
  expect(still.events[1]).toMatchObject({ detail: { noAgent: true, counted: false } });

  const state = await system.get("/");
  expect(state.waitingForAgents).toEqual([{ kind: "render", since: expect.any(String) }]);
  expect(state.done).toBe(false);
  const metrics = parsePrometheusText(await (await system.api.app.request("/metrics")).text());
  expect(metricValue(metrics, "rtb_kind_without_agent_since_seconds", { kind: "render" })).toBeCloseTo(Date.parse(state.waitingForAgents[0].since) / 1000, 0);

  // Its agent starts: the unit runs on its one attempt.
  place.own(
    await startAgent({ ...loadAgentConfig(place.env), RTB_AGENT_ID: "render-agent", RTB_HEARTBEAT_MS: 200 }, testLogger("agent"), new Map([["render", async ({ payload }) => ({ rendered: payload })]])),
  );
  const done = await waitFor("the unit to succeed", async () => {
    const u = await system.get(`/units/${id}`);
    return u.status === "success" ? u : null;
  });
  expect(done).toMatchObject({ attempt: 2, maxAttempts: 2, result: { rendered: { scene: 7 } }, waitingForAgentSince: null });
  expect((await system.get("/")).waitingForAgents).toEqual([]);
  // Every timeline rule holds (one terminal event per attempt...), and the tallies agree.
  expect(await checkTimelines(system.api.database.db)).toEqual([]);
  expect(await checkTallies(system.api.database.db)).toEqual([]);
});

it("is cancelled once it has waited RTB_NO_AGENT_TIMEOUT_MS, and the timeline says why", async () => {
  const system = place.own(await startSystem(place, { RTB_SEED_UNITS: "0", RTB_NO_AGENT_TIMEOUT_MS: "1500" }, { agents: 1 }));
  const id = await enqueue(system, { kind: "nobody" });
  await system.get("/go");
  await waitFor("the kind to be listed", async () => ((await system.get("/")).waitingForAgents.some((k: { kind: string }) => k.kind === "nobody") ? true : null));
  const cancelled = await waitFor("the unit to be cancelled", async () => {
    const u = await system.get(`/units/${id}`);
    return u.status === "cancelled" ? u : null;
  });
  expect(cancelled.lastError).toMatch(/no agent consumed kind "nobody" within RTB_NO_AGENT_TIMEOUT_MS/);
  expect(cancelled.events.at(-1)).toMatchObject({ status: "cancelled", source: "reconciler", detail: { timeoutMs: 1500 } });
  expect(cancelled.waitingForAgentSince).toBeNull();
  expect((await system.get("/")).waitingForAgents).toEqual([]);
  // Every timeline rule holds (one terminal event per attempt...), and the tallies agree.
  expect(await checkTimelines(system.api.database.db)).toEqual([]);
  expect(await checkTallies(system.api.database.db)).toEqual([]);
});
