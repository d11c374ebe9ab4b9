import { createHash } from "node:crypto";
import type { Channel, ConsumeMessage } from "amqplib";
import type { Logger } from "pino";
import { BrokerUnavailableError, type Broker } from "./broker.ts";
import type { QueueRole, ServiceMetrics } from "./metrics.ts";
import { sleep, within } from "./shutdown.ts";

/** One delivery, with the settle operations bound to the channel it arrived on. */
export interface Delivery {
  readonly msg: ConsumeMessage;
  ack(allUpTo?: boolean): void;
  /** Reject without requeue: the queue's dead-letter exchange keeps it for inspection. */
  deadLetter(): void;
  /** Hand it back to the queue for another consumer (shutdown, transient failure). */
  requeue(): void;
  /**
   * Handling it failed with `err`. A transient failure (the broker unreachable, a publish
   * unconfirmed: `isTransient`) hands it back after a pause; any other failure would repeat
   * with this message forever, so it is dead-lettered (and `onDeadLetter` told). So is a
   * message that keeps failing "transiently" while other deliveries succeed.
   */
  retryLater(err: unknown): Promise<void>;
}

export interface Consumer {
  /** Stop taking deliveries, wait for those in hand (up to the deadline), close the channel. */
  stop(deadlineMs: number): Promise<void>;
}

export interface ConsumerOptions {
  broker: Broker;
  name: string;
  queue: string;
  prefetch: number;
  logger: Logger;
  /** Runs before `consume`, on the consumer's own channel (e.g. to declare the queue it reads). */
  prepare?: (ch: Channel) => Promise<void>;
  /** Handle one delivery; settle it through `d`. The returned promise counts as work in hand. */
  onDelivery: (d: Delivery) => Promise<void> | void;
  /** Which failures passed to `retryLater` (or thrown by onDelivery) may pass with time (default: isTransientFailure). */
  isTransient?: (err: unknown) => boolean;
  /** A delivery this consumer dead-lettered because handling it failed: count it. */
  onDeadLetter?: (reason: string) => void;
  /**
   * Pause before a transient failure first hands a message back (default 1 s); it doubles with
   * each failure of the same message, up to RETRY_PAUSE_MAX_MS.
   */
  retryPauseMs?: number;
  /** Count every delivery in rtb_broker_messages_consumed_total under `queueRole`. */
  metrics?: { consumed: ServiceMetrics["consumed"]; queueRole: QueueRole } | undefined;
}

/**
 * A consumer with a bounded prefetch and manual acks that survives reconnects (the broker
 * re-runs its attachment) and consumer cancellation by the broker (a `null` delivery).
 * Settling is idempotent per delivery, so a late settle after a channel loss is harmless.
 */
export async function startConsumer(opts: ConsumerOptions): Promise<Consumer> {
  const { broker, logger } = opts;
  const attachment = `consumer:${opts.name}`;
  /** Deliveries being handled, per channel they arrived on (each must be settled there). */
  const inHand = new Map<Channel, Set<Promise<void>>>();
  let stopping = false;
  const stopped = new AbortController();
  let active: { ch: Channel; tag: string } | null = null;
  const isTransient = opts.isTransient ?? isTransientFailure;
  // Messages that failed transiently, by identity, with the acks counted when they first
  // failed: one that keeps failing while others are acked is the message's fault, not the
  // system's. Bounded: the oldest entries are forgotten first.
  const failures = new Map<string, { count: number; ackedBefore: number }>();
  let acked = 0;
  const onAck = (msg: ConsumeMessage) => {
    acked++;
    if (failures.size > 0) failures.delete(messageKey(msg));
  };

  async function retryLater(d: Delivery, err: unknown): Promise<void> {
    const key = messageKey(d.msg);
    let reason: string | null = null;
    let count = 1;
    if (!isTransient(err)) {
      reason = `handling failed (not transient): ${errorText(err)}`;
    } else {
      const f = failures.get(key) ?? { count: 0, ackedBefore: acked };
      count = ++f.count;
      failures.delete(key);
      failures.set(key, f);
      if (failures.size > MAX_TRACKED) failures.delete(failures.keys().next().value!);
      if (f.count >= POISON_AFTER && acked > f.ackedBefore) reason = `failed ${f.count} times while other messages succeeded: ${errorText(err)}`;
    }
    if (reason !== null) {
      failures.delete(key);
      logger.warn({ queue: opts.queue, messageId: d.msg.properties.messageId, reason }, "dead-lettering a message that cannot be handled");
      opts.onDeadLetter?.(reason);
      d.deadLetter();
      return;
    }
    // Not at once, and longer each time: while the broker is recovering, an immediate requeue
    // spins, and on a quorum queue before RabbitMQ 4.3 every requeue spends one of the
    // message's deliveries (x-delivery-limit): a fixed second dead-lettered it after 20 s.
    const pauseMs = retryPause(opts.retryPauseMs ?? 1_000, count, d.msg);
    logger.warn({ queue: opts.queue, err: errorText(err), failures: count, pauseMs }, "handling failed; handing the message back after a pause");
    await sleep(pauseMs, stopped.signal);
    d.requeue();
  }

  const allInHand = () => [...inHand.values()].flatMap((s) => [...s]);
  /** One binding per channel, shared by the deliveries taken on it (see ackAll). */
  const channelBindings = new WeakMap<Channel, Binding>();
  const bindingOf = (ch: Channel) => {
    let binding = channelBindings.get(ch);
    if (!binding) channelBindings.set(ch, (binding = { ch, open: new Map() }));
    return binding;
  };

  /** Close `ch` once every delivery taken on it is settled (acks must go out on it). */
  async function retire(ch: Channel) {
    await Promise.allSettled([...(inHand.get(ch) ?? [])]);
    await ch.close().catch(() => {});
  }

  await broker.attach(attachment, async (conn) => {
    if (stopping) return;
    const ch = await conn.createChannel();
    ch.on("error", (err: Error) => logger.warn({ err: err.message, consumer: opts.name }, "consumer channel error"));
    ch.on("close", () => {
      // Only the live consumer's channel asks for a re-run; a channel that failed during the
      // attachment is retried by the broker already (one retry, not two).
      if (active?.ch !== ch) return;
      active = null;
      if (!stopping) broker.reattach(attachment);
    });
    await ch.prefetch(opts.prefetch);
    if (opts.prepare) await opts.prepare(ch);
    const { consumerTag } = await ch.consume(opts.queue, (msg) => {
      if (msg === null) {
        // The broker cancelled us (queue deleted, a quorum leader moved): subscribe again on a
        // new channel at once, and close this one only when the deliveries in hand are settled,
        // so work that is running is not redelivered to someone else meanwhile.
        logger.warn({ queue: opts.queue }, "consumer cancelled by the broker; re-subscribing");
        if (active?.ch === ch) active = null;
        if (!stopping) broker.reattach(attachment);
        void retire(ch);
        return;
      }
      opts.metrics?.consumed.inc({ queue_role: opts.metrics.queueRole });
      const d = bindDelivery(bindingOf(ch), msg, { onAck, retryLater });
      const work = Promise.resolve()
        .then(() => opts.onDelivery(d))
        .catch((err: unknown) => {
          // Requeued at once, a handler that throws on this message would loop on it forever.
          logger.error({ err, queue: opts.queue }, "delivery handler failed");
          return retryLater(d, err);
        });
      let mine = inHand.get(ch);
      if (!mine) inHand.set(ch, (mine = new Set()));
      mine.add(work);
      void work.finally(() => {
        mine.delete(work);
        if (mine.size === 0 && inHand.get(ch) === mine && active?.ch !== ch) inHand.delete(ch);
      });
    });
    active = { ch, tag: consumerTag };
    // stop() ran while this attachment was in progress: don't leave a live consumer behind.
    if (stopping) await ch.close().catch(() => {});
  });

  return {
    async stop(deadlineMs) {
      const deadline = Date.now() + deadlineMs;
      stopping = true;
      stopped.abort();
      const a = active;
      // Every step is bounded: a blocked broker must not hold the shutdown past its deadline.
      if (a) await within(a.ch.cancel(a.tag), deadlineMs);
      await within(Promise.allSettled(allInHand()), deadline - Date.now());
      // Closing the channels hands anything still unacked back to the queue.
      const channels = new Set([...inHand.keys(), ...(a ? [a.ch] : [])]);
      await within(Promise.allSettled([...channels].map((ch) => ch.close())), 1_000);
    },
  };
}

/** Marks a delivery settled without sending anything; false if it already was. */
type Settle = () => boolean;

/** A channel and its unsettled deliveries by tag: what a multiple-ack may cover. */
interface Binding {
  ch: Channel;
  open: Map<number, Settle>;
}

interface DeliveryHooks {
  onAck(msg: ConsumeMessage): void;
  retryLater(d: Delivery, err: unknown): Promise<void>;
}

/** Transient failures passed to retryLater before a message that fails alone is dead-lettered. */
const POISON_AFTER = 5;
/**
 * The longest pause before a transiently failing message is handed back. With the doubling
 * from 1 s, a quorum queue's delivery limit of 20 lasts about 8 minutes of outage, not 20 s.
 */
export const RETRY_PAUSE_MAX_MS = 30_000;

/**
 * The pause before the `failures`-th transient failure of a message hands it back: `base`
 * doubled each time, capped. Counted from the broker's own count of earlier deliveries as well
 * (quorum queues: `x-delivery-count`, and from RabbitMQ 4.3 `x-acquired-count`, since a
 * requeue no longer counts as a failed delivery there), so a message other consumers failed on
 * waits as long.
 */
export function retryPause(base: number, failures: number, msg?: ConsumeMessage): number {
  const headers = msg?.properties.headers ?? {};
  const earlier = Math.max(headerCount(headers["x-delivery-count"]), headerCount(headers["x-acquired-count"]));
  const n = Math.max(failures, earlier + 1, 1);
  return Math.min(base * 2 ** Math.min(n - 1, 30), Math.max(base, RETRY_PAUSE_MAX_MS));
}

const headerCount = (v: unknown) => (typeof v === "number" && Number.isFinite(v) && v > 0 ? v : 0);
const MAX_TRACKED = 1_000;

/**
 * Failures that may pass with time: the broker unreachable or a channel lost (a publish
 * unconfirmed, nacked, cut off), a network error. Anything else thrown while handling a
 * message (a TypeError, a RangeError while encoding it, a refusal) says something about the
 * message, and would repeat.
 */
export function isTransientFailure(err: unknown): boolean {
  if (err instanceof BrokerUnavailableError) return true;
  const e = err as { code?: unknown; message?: unknown } | null;
  if (typeof e?.code === "string" && /^E[A-Z]+$/.test(e.code)) return true; // ECONNRESET, EPIPE, ...
  const message = typeof e?.message === "string" ? e.message : "";
  return /message nacked|channel (is )?closed|connection (is )?closed|channel ended|no broker/i.test(message);
}

/** One message's identity across redeliveries: its id when it has one, else its content. */
function messageKey(msg: ConsumeMessage): string {
  const id = msg.properties.messageId;
  return typeof id === "string" && id ? `id:${id}` : `sha1:${createHash("sha1").update(msg.content).digest("hex")}`;
}

const errorText = (err: unknown) => (err instanceof Error ? `${err.name}: ${err.message}` : String(err));

const bindings = new WeakMap<Delivery, Binding>();

function bindDelivery(binding: Binding, msg: ConsumeMessage, hooks: DeliveryHooks): Delivery {
  const { ch, open } = binding;
  let settled = false;
  const tag = msg.fields.deliveryTag;
  const settle: Settle = () => {
    if (settled) return false;
    settled = true;
    open.delete(tag);
    return true;
  };
  open.set(tag, settle);
  const once = (fn: () => void) => {
    if (!settle()) return;
    try {
      fn();
    } catch {
      // The channel is gone; the broker redelivers the message elsewhere.
    }
  };
  const d: Delivery = {
    msg,
    ack: (allUpTo = false) => once(() => {
      hooks.onAck(msg);
      ch.ack(msg, allUpTo);
    }),
    deadLetter: () => once(() => ch.nack(msg, false, false)),
    requeue: () => once(() => ch.nack(msg, false, true)),
    retryLater: (err) => hooks.retryLater(d, err),
  };
  bindings.set(d, binding);
  return d;
}

/**
 * Ack many deliveries with as few frames as possible: per channel, one multiple-ack of the
 * highest tag when every unsettled delivery up to it is in the set (the usual case for a
 * consumer that settles in arrival order), otherwise one ack each. Never covers a delivery
 * that is not in the set, so nothing in hand elsewhere is acked by accident.
 */
export function ackAll(deliveries: readonly Delivery[]): void {
  const byChannel = new Map<Binding, { tags: Set<number>; last: Delivery }>();
  for (const d of deliveries) {
    const binding = bindings.get(d);
    if (!binding) {
      d.ack();
      continue;
    }
    const tag = d.msg.fields.deliveryTag;
    if (!binding.open.has(tag)) continue; // settled already
    const group = byChannel.get(binding) ?? { tags: new Set<number>(), last: d };
    group.tags.add(tag);
    if (tag > group.last.msg.fields.deliveryTag) group.last = d;
    byChannel.set(binding, group);
  }
  for (const [binding, { tags, last }] of byChannel) {
    const top = last.msg.fields.deliveryTag;
    const covered = [...binding.open.keys()].every((t) => t > top || tags.has(t));
    if (!covered || tags.size === 1) {
      for (const d of deliveries) if (bindings.get(d) === binding) d.ack();
      continue;
    }
    for (const t of tags) binding.open.get(t)?.();
    try {
      binding.ch.ack(last.msg, true);
    } catch {
      // The channel is gone; the broker redelivers the messages elsewhere.
    }
  }
}
