import type { Channel, ChannelModel } from "amqplib";
import type { BrokerLayout, ExchangeLayout, QueueLayout } from "@rtb/protocol";

/**
 * The broker topology (docs/architecture.md). Every service asserts it at start and after
 * every reconnect; assertions are idempotent as long as every service declares the same
 * arguments, which is why they are built here and nowhere else.
 */
export interface Topology {
  /** api -> leader; single active consumer so one leader is active and the others stand by. */
  box: string;
  /** leader, agents -> api */
  inbox: string;
  /** direct exchange, routing key = unit kind */
  jobsExchange: string;
  /**
   * fanout exchange, api -> every agent: cancels (control-listener.ts). Each agent binds an
   * exclusive, auto-deleted queue of its own, so every agent hears every message.
   */
  controlExchange: string;
  deadExchange: string;
  dead: string;
  jobQueue(kind: string): string;
  queueType: "classic" | "quorum";
  /** quorum queues only: deliveries of one message before it is dead-lettered */
  deliveryLimit: number;
}

export function createTopology(opts: { prefix: string; box: string; queueType: "classic" | "quorum"; deliveryLimit: number }): Topology {
  const p = opts.prefix;
  return {
    box: p + opts.box,
    inbox: `${p}inbox`,
    jobsExchange: `${p}rtb.jobs`,
    controlExchange: `${p}rtb.control`,
    deadExchange: `${p}rtb.dead`,
    dead: `${p}dead`,
    jobQueue: (kind) => `${p}jobs.${kind}`,
    queueType: opts.queueType,
    deliveryLimit: opts.deliveryLimit,
  };
}

function workQueue(t: Topology, name: string, extra: Record<string, string | number | boolean> = {}): QueueLayout {
  return {
    name,
    durable: true,
    exclusive: false,
    autoDelete: false,
    arguments: {
      "x-queue-type": t.queueType,
      "x-dead-letter-exchange": t.deadExchange,
      ...(t.queueType === "quorum" ? { "x-delivery-limit": t.deliveryLimit } : {}),
      ...extra,
    },
    bindings: [],
  };
}

const exchange = (name: string, type: ExchangeLayout["type"]): ExchangeLayout => ({ name, type, durable: true, autoDelete: false });

/** A kind's job queue: durable, dead-lettered, bound to rtb.jobs by the kind. */
export function jobQueueLayout(t: Topology, kind: string): QueueLayout {
  return { ...workQueue(t, t.jobQueue(kind)), bindings: [{ exchange: t.jobsExchange, routingKey: kind }] };
}

/**
 * Every exchange and queue of this topology with its exact arguments: what the assert
 * functions below declare, and what GET /asyncapi.json documents.
 */
export function brokerLayout(t: Topology): BrokerLayout {
  return {
    exchanges: { jobs: exchange(t.jobsExchange, "direct"), control: exchange(t.controlExchange, "fanout"), dead: exchange(t.deadExchange, "fanout") },
    queues: {
      box: workQueue(t, t.box, { "x-single-active-consumer": true }),
      inbox: workQueue(t, t.inbox),
      dead: { name: t.dead, durable: true, exclusive: false, autoDelete: false, arguments: { "x-queue-type": t.queueType }, bindings: [{ exchange: t.deadExchange, routingKey: "" }] },
      jobs: jobQueueLayout(t, "{kind}"),
      // Classic by name: an exclusive queue cannot be a quorum queue, and a vhost whose
      // default type is quorum would otherwise be asked for one. Exclusive transient queues
      // are what RabbitMQ 4 keeps (it deprecates transient non-exclusive ones).
      control: { name: "", durable: false, exclusive: true, autoDelete: true, arguments: { "x-queue-type": "classic" }, bindings: [{ exchange: t.controlExchange, routingKey: "" }] },
    },
  };
}

async function declareExchange(ch: Channel, x: ExchangeLayout): Promise<void> {
  await ch.assertExchange(x.name, x.type, { durable: x.durable, autoDelete: x.autoDelete });
}

/** Declare a queue and its bindings; resolves with its name (the broker's, for a server-named one). */
async function declareQueue(ch: Channel, q: QueueLayout): Promise<string> {
  const { queue } = await ch.assertQueue(q.name, { durable: q.durable, exclusive: q.exclusive, autoDelete: q.autoDelete, arguments: q.arguments });
  for (const b of q.bindings) await ch.bindQueue(queue, b.exchange, b.routingKey);
  return queue;
}

/** Exchanges, outbox, inbox and the dead-letter queue: what every service relies on. */
export async function assertTopology(ch: Channel, t: Topology): Promise<void> {
  const { exchanges, queues } = brokerLayout(t);
  await declareExchange(ch, exchanges.dead);
  await declareQueue(ch, queues.dead);
  await declareExchange(ch, exchanges.jobs);
  await declareExchange(ch, exchanges.control);
  await declareQueue(ch, queues.box);
  await declareQueue(ch, queues.inbox);
}

/**
 * What to tell the operator when RabbitMQ answers 406 PRECONDITION_FAILED to a declare: for a
 * queue that exists with another `x-queue-type` (RabbitMQ cannot change a queue's type), the
 * queue, the existing and the wanted type, and the way out; otherwise null.
 * RabbitMQ says "received 'quorum' but current is 'classic'", or, for a queue declared
 * without the argument, "received the value 'quorum' of type 'longstr' but current is none".
 */
export function queueTypeRefusal(brokerMessage: string): string | null {
  const m = /inequivalent arg 'x-queue-type' for queue '([^']*)' in vhost '([^']*)': received (?:the value )?'([^']*)'.* but current is (?:the value )?(?:'([^']*)'|none)/.exec(brokerMessage);
  if (!m) return null;
  const [, queue, vhost, wanted, existing = "classic"] = m;
  return (
    `queue "${queue}" (vhost "${vhost}") exists as a ${existing} queue, but RTB_BROKER_QUEUE_TYPE asks for ${wanted}; ` +
    `RabbitMQ cannot change a queue's type. Set RTB_BROKER_QUEUE_TYPE=${existing} to keep running on the existing queues, ` +
    `or drain them and delete them (rabbitmqctl delete_queue), or use a new RTB_BROKER_PREFIX or vhost, then start on ${wanted} (see the README, "Queue type")`
  );
}

/**
 * A listener's own queue on the control exchange: server-named, exclusive (deleted with its
 * connection) and auto-deleted (brokerLayout's `control`).
 */
export async function assertControlQueue(ch: Channel, t: Topology): Promise<string> {
  return declareQueue(ch, brokerLayout(t).queues.control);
}

/**
 * Only agents declare job queues: a kind that no agent ever bound has no queue, so the
 * leader's mandatory publish comes back and the unit is reported as an error.
 */
export async function assertJobQueue(ch: Channel, t: Topology, kind: string): Promise<string> {
  return declareQueue(ch, jobQueueLayout(t, kind));
}

/**
 * Delete every queue and exchange of a topology (a test's or a chaos run's own names), one
 * short-lived channel each: deleting something that is not there closes the channel.
 */
export async function deleteTopology(conn: ChannelModel, t: Topology, kinds: readonly string[]): Promise<void> {
  const each = async (fn: (ch: Channel) => Promise<unknown>) => {
    const ch = await conn.createChannel();
    ch.on("error", () => {});
    await fn(ch).catch(() => {});
    await ch.close().catch(() => {});
  };
  for (const q of [t.box, t.inbox, t.dead, ...kinds.map((k) => t.jobQueue(k))]) await each((ch) => ch.deleteQueue(q));
  for (const x of [t.jobsExchange, t.controlExchange, t.deadExchange]) await each((ch) => ch.deleteExchange(x));
}
