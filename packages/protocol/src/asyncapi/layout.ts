/**
 * The broker objects rtb declares, as data: packages/runtime/src/topology.ts builds this from
 * its topology and declares exactly what it says, and the AsyncAPI document (document.ts) is
 * written from the same object, so the two cannot name different queues or arguments.
 */
export interface ExchangeLayout {
  name: string;
  type: "direct" | "fanout";
  durable: boolean;
  autoDelete: boolean;
}

export interface QueueLayout {
  /** "" for a server-named queue (the broker picks the name: `amq.gen-...`). */
  name: string;
  durable: boolean;
  exclusive: boolean;
  autoDelete: boolean;
  /** The `x-` arguments of the declare (queue.declare's arguments table). */
  arguments: Record<string, string | number | boolean>;
  /** Bindings made right after the declare. */
  bindings: { exchange: string; routingKey: string }[];
}

export interface BrokerLayout {
  exchanges: {
    /** direct, routing key = unit kind */
    jobs: ExchangeLayout;
    /** fanout, api -> every agent: cancels */
    control: ExchangeLayout;
    /** fanout, every work queue's dead-letter exchange */
    dead: ExchangeLayout;
  };
  queues: {
    /** RTB_BROKER_BOX: api -> leader */
    box: QueueLayout;
    /** leaders, agents -> api */
    inbox: QueueLayout;
    /** dead letters, kept */
    dead: QueueLayout;
    /** A kind's job queue, for the kind `{kind}` (its name and routing key hold that placeholder). */
    jobs: QueueLayout;
    /** Each agent's own queue on the control exchange: server-named. */
    control: QueueLayout;
  };
}
