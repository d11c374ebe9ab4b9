import { createServer, connect, type Server, type Socket } from "node:net";
import { expect, it } from "vitest";
import { exitWithin, logLines, pythonWithPika, runCommand, startCluster, testServers, useTestPlace, waitFor } from "@rtb/testing";

/**
 * The Python agent (python/rtb_agent) survives losing its broker connection: RabbitMQ reached
 * through a TCP relay of the test's own, which drops every connection while a unit runs. The
 * agent connects again, declares and consumes again, the unit cut short runs again (the broker
 * handed its job back) and every unit ends; its heartbeats go on under the same lifetime.
 */
const place = useTestPlace({ kinds: ["conformance", "thumbnail"] });

/** A TCP relay to RabbitMQ whose connections the test can drop (the broker keeps running). */
async function relay(target: { host: string; port: number }): Promise<{ port: number; dropAll(): number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(target.port, target.host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    dropAll() {
      const n = sockets.size;
      for (const s of sockets) s.destroy();
      return n;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

it("serves the example kind; connects again after losing the broker, runs the cut-short unit again, and finishes every unit", { timeout: 90_000 }, async () => {
  const cluster = await startCluster(place, { RTB_SEED_UNITS: "0", RTB_HEARTBEAT_MS: "500" });
  place.own({ stop: () => cluster.stopAll() });
  await cluster.start("api");
  await cluster.start("leader-1");
  await cluster.get("/go");
  const proxy = await relay(testServers().broker);
  place.own(proxy);
  const agent = runCommand(pythonWithPika(), ["examples/python-agent/agent.py"], {
    ...cluster.env,
    RTB_BROKER_HOST: `127.0.0.1:${proxy.port}`,
    RTB_AGENT_ID: "py-1",
    RTB_AGENT_KINDS: "conformance,thumbnail",
    RTB_AGENT_CONCURRENCY: "2",
    RTB_HEARTBEAT_MS: "500",
    RTB_LOG_LEVEL: "info",
  });
  place.own({ stop: () => (agent.running() ? void agent.child.kill("SIGKILL") : undefined) });
  const agentState = async () => ((await cluster.get("/")).services.agents as any[]).find((a) => a.id === "py-1");
  const first = await waitFor("the agent's heartbeat", agentState, 20_000);
  // Its first heartbeat goes out before it declares its job queues: a unit routed before they
  // exist would wait for an agent (and run as attempt 2). "agent ready" comes once it consumes them.
  await waitFor("the agent to consume its kinds", async () => logLines(agent.output()).some((l) => l.msg === "agent ready"), 20_000);

  // The example's own kind: a result, and a payload it refuses as a permanent error.
  const [thumb, noUrl] = (await cluster.enqueue([{ kind: "thumbnail", payload: { url: "https://example.com/a.png", width: 64 } }, { kind: "thumbnail", payload: {} }])).units.map((u: any) => u.id);
  const thumbs = await waitFor("both thumbnail units to end", async () => {
    const units: any[] = await Promise.all([thumb, noUrl].map((id) => cluster.get(`/units/${id}`)));
    return units.every((u) => u.status === "success" || u.status === "error") ? units : null;
  }, 20_000);
  expect(thumbs[0]).toMatchObject({ status: "success", result: { thumbnail: expect.stringMatching(/^thumbs\/[0-9a-f]{16}\.jpg$/), width: 64 } });
  expect(thumbs[1]).toMatchObject({ status: "error", attempt: 1, lastError: "payload.url: expected a string" });

  const [sleeper, ...quick] = (await cluster.enqueue([{ kind: "conformance", payload: { do: "sleep", ms: 1_500, result: "slept" } }, ...Array.from({ length: 5 }, (_, i) => ({ kind: "conformance", payload: { do: "succeed", result: i } }))])).units.map((u: any) => u.id);
  await waitFor("the sleeping unit to be processing", async () => (await cluster.get(`/units/${sleeper}`)).status === "processing", 20_000);
  expect(proxy.dropAll()).toBeGreaterThan(0);

  const ends = await waitFor("every unit to succeed", async () => {
    const units: any[] = await Promise.all([sleeper, ...quick].map((id) => cluster.get(`/units/${id}`)));
    return units.every((u) => u.status === "success") ? units : null;
  }, 30_000).catch(async (err: Error) => {
    const units: any[] = await Promise.all([sleeper, ...quick].map((id) => cluster.get(`/units/${id}`)));
    throw new Error(`${err.message}; units: ${JSON.stringify(units.map((u) => [u.id, u.status, u.attempt, u.events.map((e: any) => e.status)]))}\nthe agent's output:\n${agent.output().slice(-3000)}`);
  });
  expect(ends.map((u) => u.result)).toEqual(["slept", 0, 1, 2, 3, 4]);
  // The sleeper's attempt 1 ran twice: processing from the first connection, again from the second.
  expect(ends[0].attempt).toBe(1);
  expect(ends[0].events.filter((e: any) => e.status === "error")).toEqual([]);
  const msgs = logLines(agent.output()).map((l) => l.msg);
  expect(msgs).toContain("lost the broker connection; connecting again");
  expect(msgs).toContain("reconnected to the broker");
  // Heartbeats go on after the reconnect, under the same process lifetime.
  const later = await waitFor("a heartbeat after the reconnect", async () => {
    const a = await agentState();
    return a && a.lastSeen > first.lastSeen ? a : null;
  }, 10_000);
  expect(later.startedAt).toBe(first.startedAt);
  expect(agent.running()).toBe(true);

  agent.child.kill("SIGTERM");
  expect((await exitWithin(agent, 10_000, "the Python agent")).code).toBe(0);
});
