import { createConnection, createServer, type Server, type Socket } from "node:net";
import { expect, it } from "vitest";
import { z } from "zod";
import { BrokerUnavailableError, brokerConfig, connectBrokerFromConfig, loadConfig } from "@rtb/runtime";
import { capturingLogger, testLogger, useTestPlace, waitFor } from "@rtb/testing";

/**
 * RTB_BROKER_HOST listing several hosts, on the real broker: a host that does not answer is
 * passed over, a connection that goes away moves to the next host, and a first connection
 * that reaches none names them all. 127.0.0.1:1 and :2 stand for nodes that are down (nothing
 * listens there). Failover between real cluster nodes: test/disruptive/broker-cluster.test.ts.
 */
const place = useTestPlace();
const config = (env: Record<string, string>) => loadConfig(z.object(brokerConfig), { ...place.env, ...env });

it("passes over a host that does not answer and connects to the next, saying where", async () => {
  const real = place.env.RTB_BROKER_HOST!;
  const { logger, lines } = capturingLogger("runtime", "info");
  const broker = place.own(await connectBrokerFromConfig(config({ RTB_BROKER_HOST: `127.0.0.1:1,${real}` }), logger));
  expect(broker.connected).toBe(true);
  expect(broker.hosts).toEqual({ consume: real, publish: real });
  const failed = lines.filter((l) => l.msg === "cannot reach the broker; retrying with backoff");
  expect(failed.map((l) => [l.connection, l.broker, l.next]).sort()).toEqual([
    ["consume", "127.0.0.1:1", real],
    ["publish", "127.0.0.1:1", real],
  ]);
  expect(lines.filter((l) => l.msg === "broker connected").map((l) => l.broker)).toEqual([real, real]);
});

it("moves to the next host when the connection it had goes away", async () => {
  const real = place.env.RTB_BROKER_HOST!;
  // The first host is a TCP relay to the real broker: closing it is that host going away.
  const relay = await startRelay(real);
  const first = `127.0.0.1:${relay.port}`;
  const broker = place.own(await connectBrokerFromConfig(config({ RTB_BROKER_HOST: `${first},${real}` }), testLogger("runtime")));
  expect(broker.hosts).toEqual({ consume: first, publish: first });

  await relay.close();
  await waitFor("both connections to move to the next host", async () => broker.connected && broker.hosts.consume === real && broker.hosts.publish === real, 10_000);
  expect(broker.reconnects).toBe(2);
  expect(await broker.inspectQueue(place.topology.inbox)).toMatchObject({ exists: true });
});

it("fails a first connection that reaches no host, naming every host, what each answered, and the variable", async () => {
  const err = await connectBrokerFromConfig(config({ RTB_BROKER_HOST: "127.0.0.1:1,127.0.0.1:2", RTB_CONNECT_TIMEOUT_MS: "1500" }), testLogger("runtime")).then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BrokerUnavailableError);
  const message = (err as Error).message;
  expect(message).toContain("cannot reach RabbitMQ at any of 127.0.0.1:1, 127.0.0.1:2 (RTB_BROKER_HOST) after 1500 ms: ");
  expect(message).toMatch(/127\.0\.0\.1:1: connect ECONNREFUSED 127\.0\.0\.1:1; 127\.0\.0\.1:2: connect ECONNREFUSED 127\.0\.0\.1:2$/);
});

/** A TCP relay on a free local port to `target` (host:port); `close()` cuts every connection through it and stops listening. */
async function startRelay(target: string): Promise<{ port: number; close(): Promise<void> }> {
  const i = target.lastIndexOf(":");
  const to = { host: target.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(target.slice(i + 1)) };
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = createConnection(to);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}
