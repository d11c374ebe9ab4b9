import type { ConfirmChannel, Message, Options } from "amqplib";
import type { Logger } from "pino";
import { BrokerUnavailableError, type Broker } from "./broker.ts";
import type { QueueRole, ServiceMetrics } from "./metrics.ts";
import type { Topology } from "./topology.ts";
import { MessageTooLargeError } from "./message-size.ts";

/**
 * Publishing through a confirm channel. `publish` resolves when the broker has confirmed the
 * message and rejects when it was nacked, the channel closed first, or there is no connection:
 * an unconfirmed publish is a failed publish. Nothing is buffered in memory as if it were
 * durable; callers keep the truth (PostgreSQL, or an unacked delivery) and publish again.
 */
export interface Publisher {
  publish(exchange: string, routingKey: string, body: Buffer, options?: Options.Publish): Promise<void>;
  /** Called for every mandatory message the broker could not route. */
  onReturn(fn: (msg: Message) => void): void;
  /** Resolves when no publish is awaiting its confirm. */
  drain(): Promise<void>;
}

export interface PublisherOptions {
  /** Counts every confirmed message in rtb_broker_messages_published_total. */
  metrics?: ServiceMetrics | undefined;
  /**
   * RTB_BROKER_MAX_MESSAGE_BYTES: a larger body is refused with MessageTooLargeError and never
   * sent, since the broker would close the channel and fail every other publish awaiting its
   * confirm on it.
   */
  maxMessageBytes?: number | undefined;
}

/**
 * Nacks in a row, with no confirm between, after which a confirm channel is replaced. RabbitMQ
 * 3.10 was seen (test/disruptive/broker-cluster.test.ts) to nack every publish, for good, on a
 * channel whose first publish to a quorum queue raced the election of its new leader (the old
 * leader's node gone): about one channel in five opened within 300 ms of the node's death. A
 * new channel on the same connection publishes at once. Replacing a channel that nacks for a
 * real reason (a queue without a majority) costs a channel open per second at most (reattach).
 */
const NACK_STREAK = 3;

export async function createPublisher(broker: Broker, name: string, logger: Logger, opts: PublisherOptions = {}): Promise<Publisher> {
  const published = opts.metrics?.published;
  let channel: ConfirmChannel | null = null;
  const returnHandlers: ((msg: Message) => void)[] = [];
  const inFlight = new Set<Promise<void>>();
  // The broker's own limit when it turns out lower than RTB_BROKER_MAX_MESSAGE_BYTES: learned
  // from its refusal, so later publishes over it are refused unsent instead of closing the
  // channel again (a loop of closes and re-publishes otherwise).
  let limit = opts.maxMessageBytes;
  const refusedAt = new WeakMap<ConfirmChannel, number>();
  const nacksInARow = new WeakMap<ConfirmChannel, number>();

  /** Count a confirm or a nack of `ch`; a streak of nacks retires it and asks for another channel. */
  function confirmed(ch: ConfirmChannel, nacked: boolean) {
    const streak = nacked ? (nacksInARow.get(ch) ?? 0) + 1 : 0;
    nacksInARow.set(ch, streak);
    if (streak < NACK_STREAK || channel !== ch) return;
    logger.warn({ publisher: name, nacks: streak }, "the broker nacks every publish on this channel; opening another");
    channel = null;
    broker.reattach(`publisher:${name}`);
    // Its unconfirmed publishes fail with the channel (transient: their callers publish again).
    void ch.close().catch(() => {});
  }

  await broker.attach(`publisher:${name}`, async (conn) => {
    const ch = await conn.createConfirmChannel();
    ch.on("error", (err: Error & { code?: number }) => {
      logger.warn({ err: err.message, publisher: name }, "publish channel error");
      // 406 "message size N is larger than configured max size M": amqplib emits this before it
      // fails the unconfirmed publishes, so those can tell whether they were the culprit.
      const max = err.code === 406 ? /larger than configured max size (\d+)/.exec(err.message)?.[1] : undefined;
      if (max === undefined) return;
      refusedAt.set(ch, Number(max));
      if (limit === undefined || Number(max) < limit) limit = Number(max);
      logger.error({ publisher: name, brokerMaxMessageBytes: Number(max) }, "the broker's max_message_size is below RTB_BROKER_MAX_MESSAGE_BYTES: refusing larger messages from now on; set the two alike");
    });
    ch.on("return", (msg: Message) => returnHandlers.forEach((fn) => fn(msg)));
    ch.on("close", () => {
      if (channel !== ch) return;
      channel = null;
      broker.reattach(`publisher:${name}`);
    });
    channel = ch;
  }, "publish");

  return {
    publish(exchange, routingKey, body, options) {
      if (limit !== undefined && body.length > limit) return Promise.reject(new MessageTooLargeError(body.length, limit));
      const ch = channel;
      if (!ch) return Promise.reject(new BrokerUnavailableError("no broker channel to publish on"));
      const p = new Promise<void>((resolve, reject) => {
        try {
          ch.publish(exchange, routingKey, body, { persistent: true, contentType: "application/json", ...options }, (err) => {
            if (!err) {
              confirmed(ch, false);
              return resolve();
            }
            const max = refusedAt.get(ch);
            // Only the messages over the broker's limit were refused; the others just lost their channel.
            if (max !== undefined && body.length > max) return reject(new MessageTooLargeError(body.length, max));
            if (/nack/i.test(String((err as Error)?.message ?? err))) confirmed(ch, true);
            reject(err instanceof Error ? err : new Error(String(err)));
          });
        } catch (err) {
          reject(err);
        }
      });
      if (published) {
        const labels = { publisher: destination(broker.topology, exchange, routingKey) ?? name };
        p.then(() => published.inc(labels), () => {});
      }
      inFlight.add(p);
      const forget = () => inFlight.delete(p);
      p.then(forget, forget);
      return p;
    },
    onReturn(fn) {
      returnHandlers.push(fn);
    },
    async drain() {
      await Promise.allSettled([...inFlight]);
    },
  };
}

/**
 * What a message was published to, for the metrics: one publisher may feed several (the
 * leader's routes jobs and reports to the inbox on one confirm channel).
 */
function destination(t: Topology, exchange: string, routingKey: string): QueueRole | undefined {
  if (exchange === t.jobsExchange) return "jobs";
  if (exchange === t.controlExchange) return "control";
  if (exchange !== "") return undefined;
  if (routingKey === t.inbox) return "inbox";
  if (routingKey === t.box) return "outbox";
  return undefined;
}
