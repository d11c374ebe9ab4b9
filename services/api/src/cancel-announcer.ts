import { encodeMessage, type UnitAttempt } from "@rtb/protocol";
import { cancelMessages, within, type Logger, type Publisher, type Topology } from "@rtb/runtime";

/** How long a cancel's answer waits for the announcement's confirms; the cancel is committed either way. */
const ANNOUNCE_WAIT_MS = 2_000;

export interface CancelAnnouncer {
  /**
   * Tell every agent (the control exchange) that these attempts are cancelled, in messages of
   * at most RTB_BROKER_MAX_MESSAGE_BYTES. Resolves with whether the broker confirmed them all;
   * never rejects: the cancel is already in PostgreSQL, and an agent that missed it hears it
   * again when it reports the attempt (inbox-consumer.ts).
   */
  announce(units: readonly UnitAttempt[], why: string): Promise<boolean>;
}

export function createCancelAnnouncer(deps: { publisher: Publisher; topology: Topology; maxMessageBytes: number; logger: Logger }): CancelAnnouncer {
  const { publisher, topology, logger } = deps;
  return {
    async announce(units, why) {
      if (units.length === 0) return true;
      const messages = cancelMessages(units, deps.maxMessageBytes);
      // Not persistent: the queues it reaches live only as long as their agents' connections.
      const sent = Promise.allSettled(messages.map((m) => publisher.publish(topology.controlExchange, "", encodeMessage(m), { persistent: false })));
      const results = (await within(sent, ANNOUNCE_WAIT_MS)) ? await sent : undefined;
      const failed = results === undefined ? messages.length : results.filter((r) => r.status === "rejected").length;
      const first = results?.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed > 0) {
        logger.warn(
          { why, units: units.slice(0, 10), count: units.length, err: first ? String((first.reason as Error)?.message ?? first.reason) : `no confirm within ${ANNOUNCE_WAIT_MS} ms` },
          "cancel recorded, but the agents could not be told now; a handler still running stops when its report shows it",
        );
        return false;
      }
      logger.debug({ why, count: units.length }, "cancel announced to the agents");
      return true;
    },
  };
}
