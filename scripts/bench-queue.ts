/**
 * `npm run bench:queue`: what one RabbitMQ queue carries on this machine, the ceiling of any
 * one of rtb's queues (docs/scaling.md). A queue of rtb's type (RTB_BROKER_QUEUE_TYPE, quorum
 * by default) under names of its own; one publisher on a confirm channel, persistent messages
 * of `--bytes`, at most `--window` awaiting their confirm; one consumer at the same time, with
 * prefetch `--prefetch`, acking with one multiple-ack per turn of the event loop (as rtb's inbox
 * does). Timed from the first publish to the ack of the last message; prints messages/s and
 * MiB/s. The queue is deleted at the end.
 *
 *   npm run bench:queue                                   # 100,000 messages of 1 KiB
 *   npm run bench:queue -- --messages 200000 --bytes 200 --window 2000
 */
import { parseArgs } from "node:util";
import { connect } from "amqplib";
import { z } from "zod";
import { brokerConfig, brokerUrl, loadConfig } from "@rtb/runtime";

function int(name: string, v: string, min: number, max: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name}=${v}: expected a whole number from ${min} to ${max}`);
  return n;
}

let opts: { messages: number; bytes: number; window: number; prefetch: number };
let servers: z.output<z.ZodObject<typeof brokerConfig>>;
try {
  const { values: v } = parseArgs({
    options: {
      messages: { type: "string", default: "100000" },
      bytes: { type: "string", default: "1024" },
      window: { type: "string", default: "1000" },
      prefetch: { type: "string", default: "500" },
      help: { type: "boolean", default: false },
    },
    strict: true,
  });
  if (v.help) {
    console.log("usage: npm run bench:queue -- [--messages N (100000)] [--bytes N (1024)] [--window N (1000 unconfirmed at most)] [--prefetch N (500)]");
    process.exit(0);
  }
  opts = { messages: int("messages", v.messages, 1, 10_000_000), bytes: int("bytes", v.bytes, 1, 16 * 1024 * 1024), window: int("window", v.window, 1, 100_000), prefetch: int("prefetch", v.prefetch, 1, 65_535) };
  servers = loadConfig(z.object(brokerConfig), process.env);
} catch (err) {
  console.error(`rtb bench:queue: ${(err as Error).message}`);
  process.exit(2);
}

const queue = `bench-queue.${Date.now().toString(36)}${process.pid.toString(36)}`;
const queueType = servers.RTB_BROKER_QUEUE_TYPE;
const conn = await connect(brokerUrl(servers));
try {
  const pub = await conn.createConfirmChannel();
  const sub = await conn.createChannel();
  await pub.assertQueue(queue, { durable: true, arguments: { "x-queue-type": queueType } });
  console.error(`[bench:queue] queue ${queue} (${queueType})`);
  await sub.prefetch(opts.prefetch);
  const body = Buffer.alloc(opts.bytes, "x");

  let acked = 0;
  let pendingAck: import("amqplib").ConsumeMessage | null = null;
  let flush: NodeJS.Immediate | null = null;
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => (resolveDone = r));
  await sub.consume(queue, (m) => {
    if (!m) return;
    pendingAck = m;
    acked++;
    flush ??= setImmediate(() => {
      flush = null;
      if (pendingAck) sub.ack(pendingAck, true);
      pendingAck = null;
      if (acked >= opts.messages) resolveDone();
    });
  });

  const t0 = performance.now();
  let inFlight = 0;
  let wake: (() => void) | null = null;
  for (let i = 0; i < opts.messages; i++) {
    while (inFlight >= opts.window) await new Promise<void>((r) => (wake = r));
    inFlight++;
    pub.publish("", queue, body, { persistent: true }, (err) => {
      if (err) throw err;
      inFlight--;
      const w = wake;
      wake = null;
      w?.();
    });
  }
  await pub.waitForConfirms();
  await done;
  const seconds = (performance.now() - t0) / 1000;
  const perSec = opts.messages / seconds;
  console.log(
    `one ${queueType} queue: ${opts.messages.toLocaleString("en")} persistent messages of ${opts.bytes.toLocaleString("en")} bytes, published with confirms (window ${opts.window}) and consumed (prefetch ${opts.prefetch}) at once`,
  );
  console.log(`  ${Math.round(perSec).toLocaleString("en")} messages/s, ${((perSec * opts.bytes) / 1024 / 1024).toFixed(1)} MiB/s, in ${seconds.toFixed(2)} s`);
} finally {
  // Deleted whatever happened (a failed run too), on a channel of its own.
  await conn
    .createChannel()
    .then((ch) => ch.deleteQueue(queue))
    .catch(() => {});
  await conn.close().catch(() => {});
}
