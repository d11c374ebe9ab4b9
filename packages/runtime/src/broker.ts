import { connect, type Channel, type ChannelModel, type Options, type RecoveringChannelModel } from "amqplib";
import type { Logger } from "pino";
import { formatHostPort, type HostPort } from "./config.ts";
import { assertTopology, queueTypeRefusal, type Topology } from "./topology.ts";

/**
 * Two AMQP connections per process (consume, publish), each with amqplib's opt-in recovery
 * (exponential backoff with jitter). Channels do not survive a reconnect, so each part of a service registers an
 * `attach` function that opens its channels and consumers; the broker runs every attachment
 * after the topology is asserted, on the first connection and on every reconnect.
 *
 * The broker may be several hosts (the nodes of a cluster): each connection starts on the
 * first and moves to the next whenever an attempt fails or the connection is lost (`HostRing`).
 */
export type Attachment = (conn: ChannelModel) => Promise<void>;

export class BrokerUnavailableError extends Error {
  override name = "BrokerUnavailableError";
}

export interface QueueState {
  exists: boolean;
  messages: number;
  consumers: number;
}

export interface Broker {
  readonly topology: Topology;
  readonly connected: boolean;
  /** Number of successful connections after the first. */
  readonly reconnects: number;
  /** The host (`host:port`) each connection is on now; null while that connection is down. */
  readonly hosts: { readonly consume: string | null; readonly publish: string | null };
  /** Register `fn` on the consuming (default) or the publishing connection. */
  attach(name: string, fn: Attachment, role?: "consume" | "publish"): Promise<void>;
  /** Re-run one attachment on the current connection (after its channel was closed by an error). */
  reattach(name: string): void;
  /**
   * A passive look at a queue: ready messages and consumers. A queue that does not exist
   * holds nothing (`exists: false`); null when the broker cannot be asked right now.
   */
  inspectQueue(queue: string): Promise<QueueState | null>;
  close(): Promise<void>;
}

export interface ConnectBrokerOptions {
  /** One host, or the nodes of a cluster: tried in this order, round robin. */
  hosts: readonly HostPort[];
  /** The variable that lists them, for messages. */
  variable: string;
  user: string;
  password: string;
  vhost: string;
  topology: Topology;
  logger: Logger;
  /** Give up on the first connection after this long (0: try once). */
  connectTimeoutMs: number;
}

export async function connectBroker(opts: ConnectBrokerOptions): Promise<Broker> {
  // Two connections, as RabbitMQ advises: when a resource alarm blocks publishing, it blocks
  // the connections that publish; consumers on their own connection keep acking and draining
  // queues, which is what lets the alarm clear. One shared connection would stall both.
  const consume = await openLink(opts, "consume");
  let publish: Link;
  try {
    publish = await openLink(opts, "publish");
  } catch (err) {
    await consume.close();
    throw err;
  }
  const links = { consume, publish };
  const roleOf = new Map<string, Role>();

  return {
    topology: opts.topology,
    get connected() {
      return consume.current() !== null && publish.current() !== null;
    },
    get reconnects() {
      return consume.reconnects() + publish.reconnects();
    },
    get hosts() {
      return { consume: consume.host(), publish: publish.host() };
    },
    async attach(name, fn, role = "consume") {
      roleOf.set(name, role);
      await links[role].attach(name, fn);
    },
    reattach(name) {
      links[roleOf.get(name) ?? "consume"].reattach(name);
    },
    async inspectQueue(queue) {
      const conn = consume.current();
      if (!conn) return null;
      let ch: Channel | undefined;
      try {
        // A short-lived channel: a passive check on a missing queue closes it with a 404.
        ch = await conn.createChannel();
        ch.on("error", () => {});
        const q = await ch.checkQueue(queue);
        return { exists: true, messages: q.messageCount, consumers: q.consumerCount };
      } catch (err) {
        return (err as { code?: number }).code === 404 ? { exists: false, messages: 0, consumers: 0 } : null;
      } finally {
        await ch?.close().catch(() => {});
      }
    },
    async close() {
      await Promise.all([publish.close(), consume.close()]);
    },
  };
}

type Role = "consume" | "publish";

interface Link {
  current(): ChannelModel | null;
  /** The host of the current connection; null while there is none. */
  host(): string | null;
  reconnects(): number;
  attach(name: string, fn: Attachment): Promise<void>;
  reattach(name: string): void;
  close(): Promise<void>;
}

/**
 * The hosts a connection goes round: it starts on the first, and each failed attempt or lost
 * connection moves it to the next, so every retry of amqplib's recovery (under its backoff)
 * goes to the next host. With one host it stays there. Keeps each host's last failure, for the
 * message of a first connection that never came.
 */
class HostRing {
  private at = 0;
  private readonly failures = new Map<string, string>();
  private readonly hosts: readonly HostPort[];
  constructor(hosts: readonly HostPort[]) {
    if (hosts.length === 0) throw new Error("connectBroker: no broker host given");
    this.hosts = hosts;
  }

  get current(): HostPort {
    return this.hosts[this.at]!;
  }

  label(): string {
    return formatHostPort(this.current);
  }

  /** The attempt on the current host failed, or its connection was lost: the next try goes to the next host. */
  moveOn(why: string): void {
    this.failures.set(this.label(), why);
    this.at = (this.at + 1) % this.hosts.length;
  }

  /** Every host with its last failure, or that it was not tried yet. */
  lastFailures(): { host: string; why: string }[] {
    return this.hosts.map(formatHostPort).map((host) => ({ host, why: this.failures.get(host) ?? "not tried yet" }));
  }
}

/**
 * What amqplib connects to: its object form of a URL, with the host and port read from the
 * ring. amqplib reads these fields again on every attempt of its recovery (lib/connect.js is
 * called afresh each time), so moving the ring moves the next attempt; the cluster test
 * (test/disruptive/broker-cluster.test.ts) fails if a new amqplib stops doing so. The vhost
 * is escaped because amqplib unescapes it (as it does a URL's path).
 */
function connectTarget(opts: ConnectBrokerOptions, ring: HostRing): Options.Connect {
  return {
    protocol: "amqp",
    get hostname() {
      return ring.current.host;
    },
    get port() {
      return ring.current.port;
    },
    username: opts.user,
    password: opts.password,
    vhost: encodeURIComponent(opts.vhost),
    heartbeat: 15,
  };
}

/**
 * An attempt to reach one host gives up after this long: a host that drops packets (a node's
 * machine gone) would otherwise hold the connection for the kernel's SYN retries (about two
 * minutes) before the next host is tried. amqplib lifts the timeout once the connection is open.
 */
const ATTEMPT_TIMEOUT_MS = 10_000;

/** One recovering connection and the attachments that live on it. */
async function openLink(opts: ConnectBrokerOptions, role: Role): Promise<Link> {
  const { topology } = opts;
  const logger = opts.logger.child({ connection: role });
  const ring = new HostRing(opts.hosts);
  const at = () => `${ring.label()} (${opts.variable})`;
  const attachments = new Map<string, Attachment>();
  let current: ChannelModel | null = null;
  let reconnects = 0;
  let connectedOnce = false;
  let closing = false;
  // The broker refused our topology (406 PRECONDITION_FAILED: a queue declared before with
  // other arguments). Retrying cannot fix that, so the first connection fails at once, saying so.
  let refuseTopology: (err: Error) => void = () => {};
  const topologyRefused = new Promise<never>((_, reject) => (refuseTopology = reject));
  topologyRefused.catch(() => {});

  async function runAttachment(name: string, fn: Attachment, conn: ChannelModel) {
    try {
      await fn(conn);
    } catch (err) {
      // A job queue left with another type (agents declare those here) says what to do.
      const typeChange = queueTypeRefusal(String((err as Error)?.message));
      logger.error({ err, attachment: name, ...(typeChange ? { fix: typeChange } : {}) }, "broker attachment failed; retrying");
      scheduleReattach(name, conn);
    }
  }

  // At most one pending re-run per attachment and connection, however many failures asked for
  // one. Per connection: a re-run asked for on a connection that died meanwhile (a channel's
  // close seen before the connection's) is dropped when due, and must not swallow one asked
  // for on the new connection (that left a publisher without a channel for good).
  const pendingReattach = new Map<string, ChannelModel>();
  function scheduleReattach(name: string, conn: ChannelModel) {
    if (pendingReattach.get(name) === conn) return;
    pendingReattach.set(name, conn);
    setTimeout(() => {
      if (pendingReattach.get(name) === conn) pendingReattach.delete(name);
      const fn = attachments.get(name);
      // Only on the same live connection: a new connection runs every attachment anyway.
      if (!closing && fn && current === conn) void runAttachment(name, fn, conn);
    }, 500 + Math.random() * 500).unref();
  }

  const model: RecoveringChannelModel = await connect(connectTarget(opts, ring), {
    clientProperties: { connection_name: `rtb ${role}` },
    timeout: ATTEMPT_TIMEOUT_MS,
    recovery: {
      initialDelay: 250,
      maxDelay: 10_000,
      waitForConnect: false,
      setup: async (conn: ChannelModel) => {
        // amqplib binds its own listeners only after setup resolves: until then a dropped
        // socket would be an unhandled 'error' (a crash), and a silently dead connection
        // would be adopted as the current one. Watch for both here.
        let lost = false;
        conn.on("error", (err: Error) => logger.warn({ err: err.message }, "broker connection error during setup"));
        conn.once("close", () => {
          lost = true;
        });
        const ch = await conn.createChannel();
        ch.on("error", () => {});
        try {
          await assertTopology(ch, topology);
        } catch (err) {
          if ((err as { code?: number }).code === 406) {
            const typeChange = queueTypeRefusal((err as Error).message);
            const refused = new BrokerUnavailableError(
              typeChange
                ? `RabbitMQ at ${at()} refused the topology: ${typeChange}. Broker said: ${(err as Error).message}`
                : `RabbitMQ at ${at()} refused the topology: ${(err as Error).message}. A queue or exchange exists with other ` +
                    "arguments than this service declares: check RTB_BROKER_QUEUE_TYPE, RTB_BROKER_DELIVERY_LIMIT and RTB_BROKER_PREFIX " +
                    "against the services that declared it, or delete the old queue",
            );
            logger.error({ err: (err as Error).message }, "broker refused the topology");
            refuseTopology(refused);
            throw refused;
          }
          throw err;
        } finally {
          await ch.close().catch(() => {});
        }
        current = conn;
        // Iterating the live map also picks up attachments registered during this loop.
        for (const [name, fn] of attachments) await runAttachment(name, fn, conn);
        if (lost) {
          current = null;
          // Rejecting makes amqplib count this as a failed connect and schedule another.
          throw new BrokerUnavailableError("broker connection lost during setup");
        }
      },
    },
  });

  // These run before amqplib schedules its next attempt, so moving the ring here picks the host it goes to.
  model.on("connect", () => {
    if (connectedOnce) {
      reconnects++;
      logger.info({ broker: ring.label(), reconnects }, "broker reconnected");
    } else {
      logger.info({ broker: ring.label() }, "broker connected");
    }
    connectedOnce = true;
  });
  model.on("disconnect", (err: Error) => {
    current = null;
    const lost = ring.label();
    ring.moveOn(`connection lost: ${err.message}`);
    if (!closing) logger.warn({ broker: lost, next: ring.label(), err: err.message }, "broker connection lost; reconnecting");
  });
  model.on("connect-failed", (err: Error) => {
    const failed = ring.label();
    ring.moveOn(err.message);
    logger.warn({ broker: failed, next: ring.label(), err: err.message }, "cannot reach the broker; retrying with backoff");
  });
  model.on("blocked", (reason: string) => logger.warn({ reason }, "broker blocked this connection (resource alarm)"));
  model.on("unblocked", () => logger.info("broker unblocked this connection"));
  model.on("error", (err: Error) => logger.warn({ err: err.message }, "broker connection error"));

  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      model.waitForConnect(),
      topologyRefused,
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new BrokerUnavailableError(unreachable(opts, ring))),
          // 0 means "one attempt": give that attempt a moment to complete.
          Math.max(opts.connectTimeoutMs, 2_000),
        );
      }),
    ]);
  } catch (err) {
    closing = true;
    await model.close().catch(() => {});
    throw err;
  } finally {
    clearTimeout(timer);
  }

  return {
    current: () => current,
    host: () => (current ? ring.label() : null),
    reconnects: () => reconnects,
    async attach(name, fn) {
      attachments.set(name, fn);
      if (current) await runAttachment(name, fn, current);
    },
    reattach(name) {
      if (current) scheduleReattach(name, current);
    },
    async close() {
      closing = true;
      current = null;
      attachments.clear();
      await model.close().catch(() => {});
    },
  };
}

/**
 * The first connection's failure, naming the variable and every host in it with what each
 * last answered: `cannot reach RabbitMQ at a:5672 (RTB_BROKER_HOST) after 60000 ms: connect
 * ECONNREFUSED ...`, or `... at any of a:5672, b:5672 (RTB_BROKER_HOST) ...: a:5672: ...; b:5672: ...`.
 */
function unreachable(opts: ConnectBrokerOptions, ring: HostRing): string {
  const failures = ring.lastFailures();
  const head = `cannot reach RabbitMQ at ${failures.length === 1 ? "" : "any of "}${failures.map((f) => f.host).join(", ")} (${opts.variable}) after ${opts.connectTimeoutMs} ms`;
  return failures.length === 1 ? `${head}: ${failures[0]!.why}` : `${head}: ${failures.map((f) => `${f.host}: ${f.why}`).join("; ")}`;
}
