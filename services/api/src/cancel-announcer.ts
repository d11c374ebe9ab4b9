import { encodeMessage, type UnitAttempt } from "@rtb/protocol";
import { cancelMessages, sleep, within, type Logger, type Publisher, type Topology } from "@rtb/runtime";

/** How long a cancel's answer waits for the announcement's confirms; the cancel is committed either way. */
const ANNOUNCE_WAIT_MS = 2_000;
/** The pauses before announcing again what the broker did not confirm: about half a minute in all. */
export const ANNOUNCE_RETRY_MS: readonly number[] = [1_000, 2_000, 4_000, 8_000, 16_000];

export interface CancelAnnouncer {
  /**
   * Tell every agent (the control exchange) that these attempts are cancelled, in messages of
   * at most RTB_BROKER_MAX_MESSAGE_BYTES. Resolves with whether the broker confirmed them all
   * now; never rejects: the cancel is already in PostgreSQL. What was not confirmed is announced
   * again in the background after each of ANNOUNCE_RETRY_MS (a broker that is back within half a
   * minute stops the handlers); an agent that missed every one still hears it when it reports
   * the attempt (inbox-consumer.ts).
   */
  announce(units: readonly UnitAttempt[], why: string): Promise<boolean>;
  /** Drop the announcements still to be retried (the api stopping). */
  stop(): Promise<void>;
}

export function createCancelAnnouncer(deps: {
  publisher: Publisher;
  topology: Topology;
  maxMessageBytes: number;
  logger: Logger;
  /** The retry pauses (default ANNOUNCE_RETRY_MS). */
  retryMs?: readonly number[];
}): CancelAnnouncer {
  const { publisher, topology, logger } = deps;
  const retryMs = deps.retryMs ?? ANNOUNCE_RETRY_MS;
  const stopped = new AbortController();
  const retrying = new Set<Promise<void>>();

  /** Publish the messages; those the broker did not confirm in time, or null when all were. */
  async function send(messages: ReturnType<typeof cancelMessages>): Promise<{ left: typeof messages; err: string } | null> {
    // Not persistent: the queues it reaches live only as long as their agents' connections.
    const sent = Promise.allSettled(messages.map((m) => publisher.publish(topology.controlExchange, "", encodeMessage(m), { persistent: false })));
    const results = (await within(sent, ANNOUNCE_WAIT_MS)) ? await sent : undefined;
    if (results === undefined) return { left: messages, err: `no confirm within ${ANNOUNCE_WAIT_MS} ms` };
    const left = messages.filter((_, i) => results[i]!.status === "rejected");
    if (left.length === 0) return null;
    const first = results.find((r): r is PromiseRejectedResult => r.status === "rejected")!;
    return { left, err: String((first.reason as Error)?.message ?? first.reason) };
  }

  async function retry(messages: ReturnType<typeof cancelMessages>, why: string): Promise<void> {
    let left = messages;
    for (const pause of retryMs) {
      await sleep(pause, stopped.signal);
      if (stopped.signal.aborted) return;
      const failed = await send(left);
      if (!failed) {
        logger.info({ why, messages: messages.length }, "cancel announced to the agents after a retry");
        return;
      }
      left = failed.left;
    }
    logger.warn({ why, messages: left.length }, "cancel still not announced after its retries; a handler still running stops when its report shows it");
  }

  return {
    async announce(units, why) {
      if (units.length === 0) return true;
      const messages = cancelMessages(units, deps.maxMessageBytes);
      const failed = await send(messages);
      if (!failed) {
        logger.debug({ why, count: units.length }, "cancel announced to the agents");
        return true;
      }
      logger.warn(
        { why, units: units.slice(0, 10), count: units.length, err: failed.err },
        "cancel recorded, but the agents could not be told now; announcing it again in the background",
      );
      if (!stopped.signal.aborted && retryMs.length > 0) {
        const p = retry(failed.left, why).finally(() => retrying.delete(p));
        retrying.add(p);
      }
      return false;
    },
    async stop() {
      stopped.abort();
      await Promise.allSettled([...retrying]);
    },
  };
}
