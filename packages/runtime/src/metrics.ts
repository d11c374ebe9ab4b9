import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Logger } from "pino";
import { z } from "zod";
import type { Broker } from "./broker.ts";
import { connectBrokerFromConfig, type BrokerSettings } from "./broker-config.ts";
import { optionalHostPort, optionalHostPortOf, type HostPort, type ListenAt } from "./config.ts";
import type { ServiceParts } from "./service-parts.ts";
import { within } from "./shutdown.ts";

export { Counter, Gauge, Histogram, Registry };

/**
 * RTB_METRICS_PORT: where a leader or an agent serves GET /metrics (`host:port`, or a bare
 * port; port 0 takes any free port). Unset: no listener. A bare port listens on the host of
 * RTB_API_HOST when that is in this process's environment too (a shared .env, `npm start`),
 * else on 127.0.0.1 only: to listen on every interface, say so (`0.0.0.0:9464`). The api
 * serves /metrics on its own HTTP port instead.
 */
export const metricsConfig = {
  RTB_METRICS_PORT: optionalHostPort({ anyPort: true }),
  // The api's setting, read here only for the host a bare RTB_METRICS_PORT listens on.
  RTB_API_HOST: optionalHostPortOf(8080, { anyPort: true }),
} satisfies z.ZodRawShape;

/** The loopback address a bare RTB_METRICS_PORT listens on without an RTB_API_HOST. */
export const METRICS_DEFAULT_HOST = "127.0.0.1";

/** Where the metrics listener of these settings listens; undefined: none. */
export function metricsAddress(c: { RTB_METRICS_PORT?: ListenAt | undefined; RTB_API_HOST?: HostPort | undefined }): HostPort | undefined {
  const at = c.RTB_METRICS_PORT;
  if (!at) return undefined;
  return { host: at.host ?? c.RTB_API_HOST?.host ?? METRICS_DEFAULT_HOST, port: at.port };
}

export type ServiceName = "api" | "leader" | "agent";

/** Where a message was published to: the label of rtb_broker_messages_published_total. */
export type QueueRole = "outbox" | "jobs" | "inbox" | "control";

/**
 * One service instance's metrics: its own registry (several services run in one test process,
 * each must count only its own), with the default label `service`, prom-client's process
 * metrics, and the broker counters every service has. Created by each service's start
 * function and handed to the parts that count (publisher, consumers); no module-level registry.
 */
export interface ServiceMetrics {
  readonly service: ServiceName;
  readonly registry: Registry;
  /** Messages confirmed by the broker, by destination (outbox, jobs, inbox, control). */
  readonly published: Counter<"publisher">;
  /** Deliveries received, by the role of the queue they came from. */
  readonly consumed: Counter<"queue_role">;
  /**
   * Times a piece of work (a top-up, an outbox delivery, a job) stopped to await broker
   * confirms before going on: the waits per unit `npm run bench` prints. Confirms awaited
   * together count once.
   */
  readonly confirmWaits: Counter;
}

export function createServiceMetrics(service: ServiceName, { processMetrics = true } = {}): ServiceMetrics {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  if (processMetrics) collectDefaultMetrics({ register: registry });
  const registers = [registry];
  return {
    service,
    registry,
    published: new Counter({
      name: "rtb_broker_messages_published_total",
      help: "Messages published and confirmed by the broker, by destination (outbox, jobs, inbox)",
      labelNames: ["publisher"],
      registers,
    }),
    consumed: new Counter({
      name: "rtb_broker_messages_consumed_total",
      help: "Deliveries received from the broker, by the role of their queue (outbox, jobs, inbox)",
      labelNames: ["queue_role"],
      registers,
    }),
    confirmWaits: new Counter({
      name: "rtb_broker_confirm_waits_total",
      help: "Times a piece of work (a top-up, an outbox delivery, a job) awaited broker confirms before going on; confirms awaited together count once",
      registers,
    }),
  };
}

/** A counter whose value is read at scrape time from a running total kept elsewhere. */
export function counterFrom(registry: Registry, name: string, help: string, read: () => number): Counter {
  return new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}

/**
 * A labelled counter read at scrape time from a record of running totals (`{ reason: n }`).
 * `known` label values are always exported, at 0 until they happen: a series that appears
 * only with its first event defeats `increase()` and alerts on it.
 */
export function labelledCounterFrom(
  registry: Registry,
  name: string,
  help: string,
  label: string,
  read: () => Readonly<Record<string, number>>,
  known: readonly string[] = [],
): Counter<string> {
  return new Counter({
    name,
    help,
    labelNames: [label],
    registers: [registry],
    collect() {
      this.reset();
      const values = read();
      for (const key of known) this.inc({ [label]: key }, values[key] ?? 0);
      for (const [key, n] of Object.entries(values)) if (!known.includes(key)) this.inc({ [label]: key }, n);
    },
  });
}

/** A gauge whose value is read at scrape time. */
export function gaugeFrom(registry: Registry, name: string, help: string, read: () => number): Gauge {
  return new Gauge({
    name,
    help,
    registers: [registry],
    collect() {
      this.set(read());
    },
  });
}

/** rtb_broker_reconnects_total, read from the broker's own count at scrape time. */
export function countReconnects(metrics: ServiceMetrics, broker: { readonly reconnects: number }): void {
  counterFrom(metrics.registry, "rtb_broker_reconnects_total", "Broker connections re-established after a loss (both connections)", () => broker.reconnects);
}

export interface MetricsServer {
  /** http://host:port/metrics */
  readonly url: string;
  stop(): Promise<void>;
}

/**
 * The leader's and agents' metrics endpoint: a bare node:http listener that answers
 * GET /metrics in the Prometheus text format and 404 to anything else. Logs
 * `metrics listening` with the address it is bound to, as the socket reports it (the port
 * chosen when asked for port 0; `0.0.0.0` or `::` when it listens on every interface), and
 * the URL on that address.
 */
export async function startMetricsServer(registry: Registry, at: HostPort, logger: Logger, ready?: () => boolean): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const read = req.method === "GET" || req.method === "HEAD";
    if (ready && path === "/readyz" && read) {
      // For health checks (compose): 200 once the service has started and while its broker
      // connection is up, 503 before, during an outage and while it stops.
      const ok = ready();
      res.writeHead(ok ? 200 : 503, { "content-type": "application/json" }).end(req.method === "HEAD" ? undefined : JSON.stringify({ ready: ok }));
      return;
    }
    if (path !== "/metrics" || !read) {
      res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end(`not found: GET /metrics${ready ? " or /readyz" : ""}\n`);
      return;
    }
    registry.metrics().then(
      (text) => {
        res.writeHead(200, { "content-type": registry.contentType });
        res.end(req.method === "HEAD" ? undefined : text);
      },
      (err: unknown) => {
        logger.warn({ err }, "cannot collect metrics");
        res.writeHead(500, { "content-type": "text/plain; charset=utf-8" }).end("cannot collect metrics\n");
      },
    );
  });
  // A scraper's idle keep-alive connection must not hold the process open at exit.
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: Error) => reject(new Error(`cannot listen on ${at.host}:${at.port} (RTB_METRICS_PORT): ${err.message}`, { cause: err })));
    server.listen(at.port, at.host, () => resolve());
  });
  const bound = server.address() as AddressInfo;
  const host = bound.family === "IPv6" || bound.address.includes(":") ? `[${bound.address}]` : bound.address;
  const url = `http://${host}:${bound.port}/metrics`;
  const everyInterface = bound.address === "0.0.0.0" || bound.address === "::";
  logger.info({ url, address: `${host}:${bound.port}`, everyInterface }, "metrics listening");
  return {
    url,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * A leader's or agent's start: serve its metrics (and GET /readyz) first (when
 * RTB_METRICS_PORT is set: at `metricsAddress`), so a
 * port that is taken stops it before it takes any work; then connect to the broker and count
 * its reconnects. Both are added to the service's parts, so a broker that cannot be reached
 * closes the listener again.
 */
export async function serveMetricsAndConnect(
  config: BrokerSettings & { RTB_METRICS_PORT?: ListenAt | undefined; RTB_API_HOST?: HostPort | undefined },
  metrics: ServiceMetrics,
  logger: Logger,
  parts: ServiceParts,
): Promise<{ broker: Broker; metricsServer: MetricsServer | undefined; ready(): void }> {
  const at = metricsAddress(config);
  let started = false;
  let broker: Broker | undefined;
  const metricsServer = at ? await startMetricsServer(metrics.registry, at, logger, () => started && broker?.connected === true) : undefined;
  // Stopped last, so the final counts can still be scraped while the rest stops.
  if (metricsServer) parts.add("metrics server", (left) => within(metricsServer.stop(), left()));
  broker = await connectBrokerFromConfig(config, logger);
  const connected = broker;
  parts.add("broker", (left) => within(connected.close(), left()));
  countReconnects(metrics, broker);
  return {
    broker,
    metricsServer,
    /** Call when the service has started: GET /readyz then follows the broker connection. Not ready once it stops. */
    ready() {
      started = true;
      parts.add("readiness", () => void (started = false));
    },
  };
}
