import { z } from "zod";
import type { Logger } from "pino";
import { formatHostPort, hostPortList, int, oneOf, secret, text, type HostPort } from "./config.ts";
import { connectBroker, type Broker } from "./broker.ts";
import { createTopology, type Topology } from "./topology.ts";

/** The broker variables every service reads. */
export const brokerConfig = {
  /** One RabbitMQ, or the nodes of a cluster (`host:port,host:port,...`), tried in turn: see broker.ts. */
  RTB_BROKER_HOST: hostPortList("localhost:5672", 5672),
  RTB_BROKER_USER: text("guest"),
  RTB_BROKER_PASSWORD: secret(text("guest")),
  RTB_BROKER_VHOST: text("/"),
  // Queue names are at most 255 bytes: `jobs.<prefix><kind>` with a kind of up to 100 fits.
  RTB_BROKER_BOX: z.string().max(100).regex(/^[A-Za-z0-9_.:-]+$/, "expected a queue name (letters, digits, '-', '_', '.', ':')").default("outbox"),
  RTB_BROKER_PREFIX: z.string().max(100).regex(/^[A-Za-z0-9_.:-]*$/, "expected letters, digits, '-', '_', '.' or ':'").default(""),
  RTB_BROKER_QUEUE_TYPE: oneOf(["classic", "quorum"], "quorum"),
  RTB_BROKER_DELIVERY_LIMIT: int(20, { min: 1 }),
  RTB_CONNECT_TIMEOUT_MS: int(60_000, { min: 0 }),
  /**
   * The broker's max_message_size (rabbitmq.conf); RabbitMQ 4 defaults to 16 MiB. Every
   * message rtb publishes is cut to fit, and what cannot fit is refused before it is sent.
   * The minimum leaves room for a unit's envelope and a status message with a long source id.
   */
  RTB_BROKER_MAX_MESSAGE_BYTES: int(16 * 1024 * 1024, { min: 65_536, max: 512 * 1024 * 1024 }),
} satisfies z.ZodRawShape;

type BrokerEnv = { [K in keyof typeof brokerConfig]: z.output<(typeof brokerConfig)[K]> };

/** The AMQP URL of one host of these settings, with escaped credentials and vhost. */
export function brokerUrlOf(c: Pick<BrokerEnv, "RTB_BROKER_USER" | "RTB_BROKER_PASSWORD" | "RTB_BROKER_VHOST">, at: HostPort): string {
  return `amqp://${encodeURIComponent(c.RTB_BROKER_USER)}:${encodeURIComponent(c.RTB_BROKER_PASSWORD)}@${formatHostPort(at)}/${encodeURIComponent(c.RTB_BROKER_VHOST)}?heartbeat=15`;
}

/**
 * The URL of the first host listed: for a script's one-off connection (deleting its queues),
 * where any node of a cluster will do. The services go through `connectBrokerFromConfig`,
 * which fails over to the others.
 */
export function brokerUrl(c: Pick<BrokerEnv, "RTB_BROKER_HOST" | "RTB_BROKER_USER" | "RTB_BROKER_PASSWORD" | "RTB_BROKER_VHOST">): string {
  return brokerUrlOf(c, c.RTB_BROKER_HOST[0]!);
}

/** The broker settings every service has (the output of `brokerConfig`). */
export type BrokerSettings = BrokerEnv;

/** The topology these settings name. */
export function topologyFromConfig(c: BrokerSettings): Topology {
  return createTopology({ prefix: c.RTB_BROKER_PREFIX, box: c.RTB_BROKER_BOX, queueType: c.RTB_BROKER_QUEUE_TYPE, deliveryLimit: c.RTB_BROKER_DELIVERY_LIMIT });
}

/** Connect with these settings; messages name the hosts and the variable that lists them. */
export function connectBrokerFromConfig(c: BrokerSettings, logger: Logger): Promise<Broker> {
  return connectBroker({
    hosts: c.RTB_BROKER_HOST,
    variable: "RTB_BROKER_HOST",
    user: c.RTB_BROKER_USER,
    password: c.RTB_BROKER_PASSWORD,
    vhost: c.RTB_BROKER_VHOST,
    topology: topologyFromConfig(c),
    logger,
    connectTimeoutMs: c.RTB_CONNECT_TIMEOUT_MS,
  });
}
