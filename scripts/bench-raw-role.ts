/**
 * One role of the raw path that `npm run bench` measures rtb against (see bench-raw.ts):
 * plain amqplib, persistent messages, publisher confirms, manual acks, and nothing else.
 * Started by bench-raw.ts with its settings as JSON in argv[2]; it talks back over the IPC
 * channel, and stops when told to, on SIGTERM, or when that channel closes.
 *
 *   api     publishes `units` messages to outbox (at most `window` unconfirmed at once) and
 *           acks what comes back on inbox; reports the time from its first publish to the last ack
 *   leader  outbox -> jobs: publish each delivery on, wait for its confirm, ack it
 *   agent   jobs -> inbox: the same
 */
import { performance } from "node:perf_hooks";
import { connect, type Channel, type ConfirmChannel, type ConsumeMessage } from "amqplib";

export interface RawRoleSettings {
  role: "api" | "leader" | "agent";
  url: string;
  queues: { outbox: string; jobs: string; inbox: string };
  queueType: "classic" | "quorum";
  /** Deliveries in hand: the consumer's prefetch, as the rtb service of this role has it. */
  prefetch: number;
  /** api: messages to send, and how many may await their confirm at once. */
  units?: number;
  window?: number;
}

export type RawRoleMessage = { type: "ready" } | { type: "done"; seconds: number; acked: number } | { type: "failed"; message: string };

const settings = JSON.parse(process.argv[2] ?? "{}") as RawRoleSettings;
const tell = (m: RawRoleMessage) => process.send?.(m);

// Two connections, as every rtb service has: one to consume, one to publish.
const consumeConn = await connect(settings.url);
const publishConn = await connect(settings.url);
let stopping = false;
async function stop(code: number): Promise<never> {
  if (!stopping) {
    stopping = true;
    await consumeConn.close().catch(() => {});
    await publishConn.close().catch(() => {});
  }
  process.exit(code);
}
process.on("SIGTERM", () => void stop(0));
process.on("SIGINT", () => void stop(0));
process.on("disconnect", () => void stop(0));
for (const conn of [consumeConn, publishConn]) conn.on("error", (err: Error) => fail(`connection error: ${err.message}`));
function fail(message: string) {
  if (stopping) return;
  tell({ type: "failed", message });
  void stop(1);
}

const consumer: Channel = await consumeConn.createChannel();
const publisher: ConfirmChannel = await publishConn.createConfirmChannel();
for (const ch of [consumer, publisher]) ch.on("error", (err: Error) => fail(`channel error: ${err.message}`));
const { outbox, jobs, inbox } = settings.queues;
for (const q of [outbox, jobs, inbox]) {
  await consumer.assertQueue(q, {
    durable: true,
    arguments: { "x-queue-type": settings.queueType, ...(q === outbox ? { "x-single-active-consumer": true } : {}) },
  });
}
await consumer.prefetch(settings.prefetch);

// Told to stop while confirms were still coming: the broker requeues what is not acked.
const ack = (msg: ConsumeMessage) => {
  if (!stopping) consumer.ack(msg);
};

const publishOptions = { persistent: true, contentType: "application/json" } as const;

/**
 * Publish `body` to `queue`; `confirmed` resolves on the broker's confirm. `full` says the
 * channel's buffer is full: a sender of many should wait for its "drain".
 */
function publish(queue: string, body: Buffer): { confirmed: Promise<void>; full: boolean } {
  let full = false;
  const confirmed = new Promise<void>((resolve, reject) => {
    full = !publisher.sendToQueue(queue, body, publishOptions, (err) => (err ? reject(new Error(`nacked: ${String(err)}`)) : resolve()));
  });
  return { confirmed, full };
}

if (settings.role === "leader" || settings.role === "agent") {
  // Each delivery: publish it on with a confirm, then ack it (the shape of the leader's route
  // and of an agent's report, without the work around them).
  const to = settings.role === "leader" ? jobs : inbox;
  await consumer.consume(settings.role === "leader" ? outbox : jobs, (msg: ConsumeMessage | null) => {
    if (!msg) return fail("the broker cancelled the consumer");
    publish(to, msg.content).confirmed.then(
      () => ack(msg),
      (err: Error) => fail(err.message),
    );
  });
  tell({ type: "ready" });
} else {
  const units = settings.units ?? 0;
  const window = settings.window ?? 1;
  let acked = 0;
  let started = 0;
  await consumer.consume(inbox, (msg: ConsumeMessage | null) => {
    if (!msg) return fail("the broker cancelled the consumer");
    ack(msg);
    if (++acked === units) tell({ type: "done", seconds: (performance.now() - started) / 1000, acked });
  });
  process.on("message", (m: { type?: string }) => {
    if (m.type !== "go") return;
    started = performance.now();
    void sendAll(units, window).catch((err: Error) => fail(err.message));
  });
  tell({ type: "ready" });
}

/** Publish `units` messages to the outbox, at most `window` awaiting their confirm at once. */
async function sendAll(units: number, window: number): Promise<void> {
  let sent = 0;
  let inFlight = 0;
  let wake: (() => void) | null = null;
  while (sent < units) {
    if (inFlight >= window) {
      await new Promise<void>((r) => (wake = r));
      continue;
    }
    const n = ++sent;
    inFlight++;
    // About the size of rtb's dispatch message for a unit with an empty payload.
    const body = Buffer.from(JSON.stringify({ v: 1, unitId: n, attempt: 1, kind: "noop", group: `g-${n % 4}`, payload: {} }));
    const { confirmed, full } = publish(outbox, body);
    confirmed.then(
      () => {
        inFlight--;
        const w = wake;
        wake = null;
        w?.();
      },
      (err: Error) => fail(err.message),
    );
    if (full) await new Promise<void>((r) => publisher.once("drain", () => r()));
  }
}
