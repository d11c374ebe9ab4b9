import type { Channel } from "amqplib";
import type { Logger } from "pino";
import { ControlMessage, parseMessage } from "@rtb/protocol";
import type { Broker } from "./broker.ts";
import { assertControlQueue } from "./topology.ts";

export interface ControlListener {
  stop(): Promise<void>;
}

/**
 * Hears the control exchange (topology.ts: `rtb.control`, fanout) on a queue of its own:
 * server-named, exclusive and auto-deleted, so it lives exactly as long as this connection,
 * and every listener hears every message. A new queue is bound after every reconnect;
 * what was published while the connection was down is not heard (the api announces a
 * cancel again when a report shows an agent running a cancelled attempt).
 *
 * Deliveries are taken without acks: a control message is a notice that acting on twice or
 * losing costs nothing durable (PostgreSQL holds the cancel), and no message may wait for
 * an ack behind a slow one. An invalid message is logged and dropped: it is nobody's work.
 */
export async function startControlListener(opts: { broker: Broker; logger: Logger; onMessage: (m: ControlMessage) => void }): Promise<ControlListener> {
  const { broker, logger } = opts;
  const attachment = "control-listener";
  let stopping = false;
  let current: Channel | null = null;
  await broker.attach(attachment, async (conn) => {
    if (stopping) return;
    const ch = await conn.createChannel();
    ch.on("error", (err: Error) => logger.warn({ err: err.message }, "control channel error"));
    ch.on("close", () => {
      if (current !== ch) return;
      current = null;
      if (!stopping) broker.reattach(attachment);
    });
    const queue = await assertControlQueue(ch, broker.topology);
    await ch.consume(
      queue,
      (msg) => {
        if (msg === null) {
          // Cancelled by the broker (the queue deleted under us): bind a new one.
          if (current === ch) current = null;
          if (!stopping) broker.reattach(attachment);
          void ch.close().catch(() => {});
          return;
        }
        const parsed = parseMessage(ControlMessage, msg.content);
        if (!parsed.ok) {
          logger.warn({ reason: parsed.reason }, "ignoring an invalid control message");
          return;
        }
        try {
          opts.onMessage(parsed.value);
        } catch (err) {
          logger.error({ err }, "handling a control message failed");
        }
      },
      { noAck: true },
    );
    current = ch;
    if (stopping) await ch.close().catch(() => {});
  });
  return {
    async stop() {
      stopping = true;
      const ch = current;
      current = null;
      await ch?.close().catch(() => {});
    },
  };
}
