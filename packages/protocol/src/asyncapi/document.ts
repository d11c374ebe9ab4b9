import { z } from "zod";
import { BatchJobMessage, CancelMessage, DispatchMessage, JobMessage, MAX_AGENT_KINDS, MAX_JOB_UNITS, StatusMessage, StatusUpdate } from "../messages.ts";
import type { BrokerLayout, ExchangeLayout, QueueLayout } from "./layout.ts";
import { messageExamples } from "./examples.ts";
import { protocolRules } from "./rules.ts";

export interface AsyncApiOptions {
  /** What this installation declares (packages/runtime/src/topology.ts, brokerLayout). */
  layout: BrokerLayout;
  /** The broker as the api reaches it: `host:port` (the first of RTB_BROKER_HOST) and RTB_BROKER_VHOST. No credentials. */
  broker: { host: string; vhost: string };
  /** RTB_BROKER_MAX_MESSAGE_BYTES */
  maxMessageBytes: number;
  /** RTB_HEARTBEAT_MS's default and maximum, and how long the api lists an instance after its last heartbeat. */
  heartbeat: { defaultMs: number; maxMs: number; seenRecentlyMs: number };
  /** RTB_PROCESSING_TIMEOUT_MS: an attempt processing this long is ended by the api. */
  processingTimeoutMs: number;
  version: string;
}

/** A heartbeat: a status message with no updates (the same schema, held to none). */
export const HeartbeatMessage = StatusMessage.extend({
  updates: z.array(StatusUpdate).max(0).describe("Empty: that is what makes it a heartbeat."),
}).describe("leader, agents -> inbox -> api: alive, with running counters (and an agent's kinds); sent every RTB_HEARTBEAT_MS.");

/** Every message that travels on the broker, by its name in components.messages. */
export const BROKER_MESSAGES = {
  dispatch: { schema: DispatchMessage, title: "Dispatch", type: "dispatch" },
  job: { schema: JobMessage, title: "Job (one unit)", type: "job" },
  batchJob: { schema: BatchJobMessage, title: `Job (a batch of 1..${MAX_JOB_UNITS} units of one kind)`, type: "job" },
  status: { schema: StatusMessage, title: "Status reports", type: "status" },
  heartbeat: { schema: HeartbeatMessage, title: "Heartbeat", type: "status" },
  cancel: { schema: CancelMessage, title: "Cancel", type: "cancel" },
} as const;
export type BrokerMessageName = keyof typeof BROKER_MESSAGES;

const BINDING = "0.3.0";

/** A message body's JSON Schema as it travels (the input side of the zod schema), without $schema. */
function payloadSchema(schema: z.ZodType): object {
  const { $schema: _, ...json } = z.toJSONSchema(schema, { target: "draft-07", io: "input" }) as Record<string, unknown>;
  return json;
}

/**
 * The AsyncAPI 3.0 document of rtb's broker protocol: every exchange and queue this
 * installation declares (with the arguments it declares them with), every message (its
 * payload generated from the zod schema consumers validate with), and who sends and receives
 * what. Served by the api at GET /asyncapi.json; docs/protocol.md is the guide to it.
 */
export function asyncApiDocument(o: AsyncApiOptions): Record<string, unknown> {
  const { exchanges: x, queues: q } = o.layout;
  const vhost = o.broker.vhost;
  const ref = (path: string) => ({ $ref: `#/${path}` });
  const msgs = (...names: BrokerMessageName[]) => Object.fromEntries(names.map((n) => [n, ref(`components/messages/${n}`)]));

  const exchangeChannel = (e: ExchangeLayout, description: string, names: BrokerMessageName[], extra: object = {}) => ({
    address: e.name,
    title: `${e.name} (${e.type} exchange)`,
    description,
    messages: msgs(...names),
    bindings: { amqp: { is: "routingKey", exchange: { name: e.name, type: e.type, durable: e.durable, autoDelete: e.autoDelete, vhost }, bindingVersion: BINDING } },
    ...extra,
  });
  const queueChannel = (l: QueueLayout, description: string, names: BrokerMessageName[], extra: object = {}) => ({
    // A server-named queue has no address of its own (AsyncAPI: null, known at runtime).
    address: l.name === "" ? null : l.name,
    title: l.name === "" ? "(server-named queue)" : `${l.name} (queue)`,
    description,
    messages: msgs(...names),
    bindings: {
      amqp: {
        is: "queue",
        queue: { ...(l.name === "" ? {} : { name: l.name }), durable: l.durable, exclusive: l.exclusive, autoDelete: l.autoDelete, vhost },
        // The AMQP binding has no field for a declare's arguments or a queue's bindings.
        "x-arguments": l.arguments,
        "x-bindings": l.bindings,
        bindingVersion: BINDING,
      },
    },
    ...extra,
  });

  const work = `Declare it with exactly these arguments (x-arguments) or check it passively: RabbitMQ refuses a declare with other arguments (406 PRECONDITION_FAILED, which closes the channel).`;
  const channels = {
    outbox: queueChannel(q.box, `api -> leader: dispatch messages. Single active consumer: one leader consumes, the others stand by. ${work}`, ["dispatch"]),
    jobs: exchangeChannel(x.jobs, "leader (and an agent handing work back) -> the job queues: routing key = the unit's kind. The leader publishes mandatory, so a job for a kind without a queue comes back.", ["job", "batchJob"]),
    jobQueue: queueChannel(
      q.jobs,
      `One per kind: the jobs of that kind. Declared and bound (routing key = kind) only by the agents that serve the kind, before they consume it. ${work}`,
      ["job", "batchJob"],
      { parameters: { kind: { description: "A unit kind: 1 to 100 letters, digits, '_', '.' or '-'.", examples: ["render", "email"] } } },
    ),
    inbox: queueChannel(q.inbox, `leaders, agents -> api: status messages (reports, heartbeats), published through the default exchange with routing key = this queue's name. ${work}`, ["status", "heartbeat"]),
    control: exchangeChannel(x.control, "api -> every agent: cancel messages (fanout: every bound queue gets each one). Not persistent; a message published while an agent was disconnected is not heard by it (the api announces again when a report shows a cancelled attempt running).", ["cancel"]),
    controlQueue: queueChannel(q.control, "Each agent's own queue on rtb.control, declared with an empty name (the broker names it), exclusive and auto-deleted, bound to the control exchange, consumed without acks; a new one after every reconnect.", ["cancel"]),
    deadLetters: exchangeChannel(x.dead, "The dead-letter exchange of every work queue: a message rejected without requeue (or, on quorum queues, delivered more than x-delivery-limit times) goes here.", ["dispatch", "job", "batchJob", "status"]),
    dead: queueChannel(q.dead, "Dead letters, kept for inspection; nobody consumes them. Each keeps its original headers plus RabbitMQ's x-death.", ["dispatch", "job", "batchJob", "status"]),
  };

  type Channel = keyof typeof channels;
  const op = (action: "send" | "receive", channel: Channel, names: BrokerMessageName[], summary: string, description: string, amqp: object, tag: string) => ({
    action,
    channel: ref(`channels/${channel}`),
    messages: names.map((n) => ref(`channels/${channel}/messages/${n}`)),
    summary,
    description,
    tags: [{ name: tag }],
    bindings: { amqp: { ...amqp, bindingVersion: BINDING } },
  });
  const persistent = { deliveryMode: 2 };
  const operations = {
    apiSendDispatch: op("send", "outbox", ["dispatch"], "The api dispatches units", "Published persistent through the default exchange, confirmed; up to 100 units a message, within RTB_BROKER_MAX_MESSAGE_BYTES.", persistent, "api"),
    apiReceiveStatus: op("receive", "inbox", ["status", "heartbeat"], "The api applies reports and heartbeats", "Applied in batches, one transaction each, then acked. An invalid message is dead-lettered and counted; a report of a stale or cancelled attempt is acked and ignored.", { ack: true }, "api"),
    apiSendCancel: op("send", "control", ["cancel"], "The api announces cancelled attempts", "Not persistent (deliveryMode 1): PostgreSQL holds the cancel; this is a notice.", { deliveryMode: 1 }, "api"),
    leaderReceiveDispatch: op("receive", "outbox", ["dispatch"], "The leader takes dispatch messages", "Acked only once every job is published and confirmed and the routing reports are confirmed; an invalid message is dead-lettered.", { ack: true }, "leader"),
    leaderSendJobs: op("send", "jobs", ["job", "batchJob"], "The leader publishes jobs", "Persistent, mandatory, routing key = kind, confirmed. A returned job (no queue for the kind) is reported as an error with noAgent.", { ...persistent, mandatory: true, cc: ["{kind}"] }, "leader"),
    leaderSendStatus: op("send", "inbox", ["status"], "The leader reports queued (or unroutable) units", "With `utilization` (the job queues' depths).", persistent, "leader"),
    leaderSendHeartbeat: op("send", "inbox", ["heartbeat"], "The leader's heartbeat", `Every RTB_HEARTBEAT_MS (default ${o.heartbeat.defaultMs} ms).`, persistent, "leader"),
    agentReceiveJobs: op("receive", "jobQueue", ["job", "batchJob"], "An agent consumes the jobs of a kind it serves", "Prefetch = concurrency; manual acks, each only after the job's reports are confirmed. An invalid job is rejected without requeue (dead-lettered).", { ack: true }, "agent"),
    agentSendJobs: op("send", "jobs", ["job", "batchJob"], "An agent hands back what its shutdown cut short", "When some units of a batch were already reported: the others, as a job of their own, published before the original is acked.", { ...persistent, cc: ["{kind}"] }, "agent"),
    agentReceiveControl: op("receive", "controlQueue", ["cancel"], "An agent hears cancels", "Without acks (noAck). A message of a type it does not know is ignored.", { ack: false }, "agent"),
    agentSendStatus: op("send", "inbox", ["status"], "An agent reports processing, success and error", "Persistent, confirmed; reports of units that start or end together may share one message.", persistent, "agent"),
    agentSendHeartbeat: op("send", "inbox", ["heartbeat"], "An agent's heartbeat", `Every RTB_HEARTBEAT_MS (default ${o.heartbeat.defaultMs} ms, at most ${o.heartbeat.maxMs}), at once when it starts consuming, and soon after it dead-letters something; with \`kinds\` and \`counters\`.`, persistent, "agent"),
  };

  const examples = messageExamples();
  const messages = Object.fromEntries(
    Object.entries(BROKER_MESSAGES).map(([name, m]) => [
      name,
      {
        name,
        title: m.title,
        summary: m.schema.description,
        contentType: "application/json",
        payload: payloadSchema(m.schema),
        // rtb sets no AMQP `type` property: the body's `type` field tells the messages apart.
        bindings: { amqp: { bindingVersion: BINDING } },
        examples: examples[name as BrokerMessageName],
      },
    ]),
  );

  return {
    asyncapi: "3.0.0",
    id: "urn:rtb:broker-protocol",
    info: {
      title: "rtb broker protocol",
      version: o.version,
      description: protocolRules({ maxMessageBytes: o.maxMessageBytes, heartbeat: o.heartbeat, processingTimeoutMs: o.processingTimeoutMs, maxAgentKinds: MAX_AGENT_KINDS }),
      tags: [
        { name: "api", description: "What the api sends and receives." },
        { name: "leader", description: "What the leader sends and receives." },
        { name: "agent", description: "What an agent, in any language, must send and receive." },
      ],
    },
    defaultContentType: "application/json",
    servers: {
      broker: {
        host: o.broker.host,
        protocol: "amqp",
        protocolVersion: "0.9.1",
        pathname: vhost.startsWith("/") ? vhost : `/${vhost}`,
        description: `The RabbitMQ this api uses (RTB_BROKER_HOST), vhost "${vhost}" (RTB_BROKER_VHOST; in an AMQP URL it is percent-encoded: amqp://user:password@${o.broker.host}/${encodeURIComponent(vhost)}). Credentials are the operator's.`,
      },
    },
    channels,
    operations,
    components: { messages },
  };
}
