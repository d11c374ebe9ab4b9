/**
 * One role of the raw path that `npm run bench` measures rtb against (see bench-raw.ts):
 * plain amqplib, persistent messages, publisher confirms, manual acks, rtb's batching and
 * message shapes, and nothing else (no database, no validation). Started by bench-raw.ts
 * with its settings as JSON in argv[2]; it talks back over the IPC channel, and stops when
 * told to, on SIGTERM, or when that channel closes.
 *
 *   api     publishes `units` units to outbox as dispatch messages of `unitsPerMessage`, at
 *           most `window` units awaiting their confirm at once; consumes inbox, counting the
 *           units whose terminal report arrived, one multiple-ack per turn of the event loop;
 *           reports the time from its first publish to the last terminal report acked
 *   leader  per outbox delivery: its units as jobs of `jobUnits`, all published, their
 *           confirms awaited together, then one `queued` report for the delivery, then the ack
 *   agent   per job: one `processing` and one `success` report, both confirms awaited together, then the ack
 *
 * Each role counts the messages it published and tells them when asked ("count").
 */
import { performance } from "node:perf_hooks";
import { connect, type Channel, type ConfirmChannel, type ConsumeMessage } from "amqplib";
import type { BatchJobMessage, DispatchMessage, ReportedStatus, StatusMessage, UnitAttempt } from "@rtb/protocol";

export interface RawRoleSettings {
  role: "api" | "leader" | "agent";
  /** The sender's id in its status messages (`leader`, `agent-1`, ...). */
  name: string;
  url: string;
  queues: { outbox: string; jobs: string; inbox: string };
  queueType: "classic" | "quorum";
  /** Deliveries in hand: the consumer's prefetch, as the rtb service of this role has it. */
  prefetch: number;
  /** api: units to send, units per outbox message, and how many units may await their confirm at once. */
  units?: number;
  unitsPerMessage?: number;
  window?: number;
  /** leader: units per job message. */
  jobUnits?: number;
}

/** What a role tells bench-raw.ts. */
export type RawRoleMessage =
  | { type: "ready" }
  | { type: "done"; seconds: number; units: number }
  | { type: "published"; messages: number }
  | { type: "failed"; message: string };

/** What bench-raw.ts tells a role: start sending (api), or say how many messages you published. */
export type RawRoleCommand = { type: "go" } | { type: "count" };

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

let published = 0;
let started = 0;
process.on("message", (m: RawRoleCommand) => {
  if (m.type === "count") tell({ type: "published", messages: published });
  if (m.type === "go" && settings.role === "api") {
    started = performance.now();
    void sendAll().catch((err: Error) => fail(err.message));
  }
});

// Told to stop while confirms were still coming: the broker requeues what is not acked.
const ack = (msg: ConsumeMessage, allUpTo = false) => {
  if (!stopping) consumer.ack(msg, allUpTo);
};

const publishOptions = { persistent: true, contentType: "application/json" } as const;

/**
 * Publish `body` to `queue`; `confirmed` resolves on the broker's confirm. `full` says the
 * channel's buffer is full: a sender of many should wait for its "drain".
 */
function publish(queue: string, body: DispatchMessage | BatchJobMessage | StatusMessage): { confirmed: Promise<void>; full: boolean } {
  let full = false;
  published++;
  const confirmed = new Promise<void>((resolve, reject) => {
    full = !publisher.sendToQueue(queue, Buffer.from(JSON.stringify(body)), publishOptions, (err) => (err ? reject(new Error(`nacked: ${String(err)}`)) : resolve()));
  });
  return { confirmed, full };
}

/** A status message of rtb's shape (packages/protocol StatusMessage): `status` for each of `units`. */
function report(service: "leader" | "agent", units: readonly UnitAttempt[], status: ReportedStatus): StatusMessage {
  const at = new Date().toISOString();
  return { v: 1, type: "status", source: { service, id: settings.name }, updates: units.map((u) => ({ unitId: u.unitId, attempt: u.attempt, status, at })) };
}

const handle = (work: (msg: ConsumeMessage) => Promise<void>) => (msg: ConsumeMessage | null) => {
  if (!msg) return fail("the broker cancelled the consumer");
  work(msg).then(
    () => ack(msg),
    (err: Error) => fail(err.message),
  );
};

if (settings.role === "leader") {
  const jobUnits = settings.jobUnits ?? 1;
  await consumer.consume(
    outbox,
    handle(async (msg) => {
      const { units } = JSON.parse(msg.content.toString()) as DispatchMessage;
      const sends = [];
      for (let i = 0; i < units.length; i += jobUnits) {
        const batch = units.slice(i, i + jobUnits).map((u) => ({ unitId: u.unitId, attempt: u.attempt, payload: u.payload }));
        sends.push(publish(jobs, { v: 1, type: "job", kind: units[i]!.kind, units: batch }).confirmed);
      }
      await Promise.all(sends);
      // As rtb's leader: the units are reported queued only once their jobs are confirmed.
      await publish(inbox, report("leader", units, "queued")).confirmed;
    }),
  );
} else if (settings.role === "agent") {
  await consumer.consume(
    jobs,
    handle(async (msg) => {
      const { units } = JSON.parse(msg.content.toString()) as BatchJobMessage;
      await Promise.all([publish(inbox, report("agent", units, "processing")).confirmed, publish(inbox, report("agent", units, "success")).confirmed]);
    }),
  );
} else {
  const units = settings.units ?? 0;
  // Per unit, which of its reports arrived (a unit counts once, whatever arrives twice).
  const QUEUED = 1;
  const TERMINAL = 2;
  const seen = new Uint8Array(units + 1);
  let queued = 0;
  let terminal = 0;
  let seconds: number | null = null;
  let told = false;
  let last: ConsumeMessage | null = null;
  // What arrived in one turn of the event loop is acked at its end with one multiple-ack, as
  // the api acks a batch of reports. Timed to the ack of the last terminal report, as rtb's
  // run is timed to its last terminal status; done once the `queued` reports are in too, so
  // that every role has published all it will when asked to count.
  const ackTurn = () => {
    const msg = last;
    last = null;
    if (!msg) return;
    ack(msg, true);
    if (terminal === units && seconds === null) seconds = (performance.now() - started) / 1000;
    if (seconds !== null && queued === units && !told) {
      told = true;
      tell({ type: "done", seconds, units: terminal });
    }
  };
  await consumer.consume(inbox, (msg: ConsumeMessage | null) => {
    if (!msg) return fail("the broker cancelled the consumer");
    const { updates } = JSON.parse(msg.content.toString()) as StatusMessage;
    for (const u of updates) {
      const flag = u.status === "queued" ? QUEUED : u.status === "success" ? TERMINAL : 0;
      if (flag === 0 || (seen[u.unitId]! & flag) !== 0) continue;
      seen[u.unitId] = seen[u.unitId]! | flag;
      if (flag === QUEUED) queued++;
      else terminal++;
    }
    if (last === null) setImmediate(ackTurn);
    last = msg;
  });
}
tell({ type: "ready" });

/** api: publish the units to outbox as dispatch messages, at most `window` units awaiting their confirm at once. */
async function sendAll(): Promise<void> {
  const units = settings.units ?? 0;
  const window = settings.window ?? 1;
  // rtb's top-up claims at most RTB_BROADCAST_MAX_QUEUE units, so a window below the message size makes its messages smaller.
  const perMessage = Math.min(settings.unitsPerMessage ?? 1, window);
  let sent = 0;
  let inFlight = 0;
  let wake: (() => void) | null = null;
  while (sent < units) {
    const n = Math.min(perMessage, units - sent);
    if (inFlight + n > window) {
      await new Promise<void>((r) => (wake = r));
      continue;
    }
    const from = sent + 1;
    sent += n;
    inFlight += n;
    const batch = Array.from({ length: n }, (_, i) => ({ unitId: from + i, attempt: 1, kind: "noop", payload: {} }));
    const { confirmed, full } = publish(outbox, { v: 1, type: "dispatch", units: batch });
    confirmed.then(
      () => {
        inFlight -= n;
        const w = wake;
        wake = null;
        w?.();
      },
      (err: Error) => fail(err.message),
    );
    if (full) await new Promise<void>((r) => publisher.once("drain", () => r()));
  }
}
