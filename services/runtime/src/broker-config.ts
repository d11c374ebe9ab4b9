import { z } from "zod";
import { hostPort, int, oneOf, text } from "./config.ts";

/** The broker variables every service reads. */
export const brokerConfig = {
  RTB_BROKER_HOST: hostPort("localhost:5672", 5672),
  RTB_BROKER_USER: text("guest"),
  RTB_BROKER_PASSWORD: text("guest"),
  RTB_BROKER_VHOST: text("/"),
  RTB_BROKER_BOX: z.string().regex(/^[A-Za-z0-9_.:-]+$/, "expected a queue name (letters, digits, '-', '_', '.', ':')").default("outbox"),
  RTB_BROKER_PREFIX: z.string().regex(/^[A-Za-z0-9_.:-]*$/, "expected letters, digits, '-', '_', '.' or ':'").default(""),
  RTB_BROKER_QUEUE_TYPE: oneOf(["classic", "quorum"], "classic"),
  RTB_BROKER_DELIVERY_LIMIT: int(20, { min: 1 }),
  RTB_CONNECT_TIMEOUT_MS: int(60_000, { min: 0 }),
} satisfies z.ZodRawShape;

type BrokerEnv = { [K in keyof typeof brokerConfig]: z.output<(typeof brokerConfig)[K]> };

export function brokerUrl(c: Pick<BrokerEnv, "RTB_BROKER_HOST" | "RTB_BROKER_USER" | "RTB_BROKER_PASSWORD" | "RTB_BROKER_VHOST">): string {
  const host = c.RTB_BROKER_HOST.host.includes(":") ? `[${c.RTB_BROKER_HOST.host}]` : c.RTB_BROKER_HOST.host;
  return `amqp://${encodeURIComponent(c.RTB_BROKER_USER)}:${encodeURIComponent(c.RTB_BROKER_PASSWORD)}@${host}:${c.RTB_BROKER_HOST.port}/${encodeURIComponent(c.RTB_BROKER_VHOST)}?heartbeat=15`;
}
