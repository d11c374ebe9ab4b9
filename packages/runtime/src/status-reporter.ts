import { encodeMessage, type Source, type StatusMessage, type StatusUpdate } from "@rtb/protocol";
import type { Publisher } from "./publisher.ts";
import { BrokerUnavailableError } from "./broker.ts";
import { sleep } from "./shutdown.ts";
import { jsonBytes, MessageTooLargeError, splitBySize, statusOverhead } from "./message-size.ts";

export interface StatusReporter {
  /**
   * Send these updates to the inbox. Resolves when the broker confirmed the message that
   * carried them, rejects when it did not: the caller then keeps its own truth (an unacked
   * delivery) and hands it back, exactly as with a publish of its own. A shared message the
   * broker refused for its size is sent again one update per message: only an update refused
   * alone rejects with MessageTooLargeError.
   */
  report(updates: readonly StatusUpdate[]): Promise<void>;
}

/**
 * A refusal for size closes the channel, and the publisher opens another at once: a resend
 * alone waits for it (up to about 3 s) instead of failing as if the broker were down.
 */
async function publishAlone(publish: () => Promise<void>): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await publish();
    } catch (err) {
      if (!(err instanceof BrokerUnavailableError) || attempt >= 30) throw err;
      await sleep(100);
    }
  }
}

/** Updates per message at most (the schema allows 10,000). */
const MAX_UPDATES = 1_000;

interface Waiting {
  updates: readonly StatusUpdate[];
  resolve: () => void;
  reject: (err: unknown) => void;
}

/**
 * Coalesces status updates into few inbox messages: every update reported in the same turn
 * of the event loop goes out in one message (up to MAX_UPDATES), sent at the end of that
 * turn, so nothing waits for a timer or for another message's confirm. Under load many jobs
 * settle in one turn (a socket read carries many deliveries and confirms), so messages
 * carry many updates by themselves, and the api applies each message in one transaction.
 * At most `maxInFlight` messages await their confirms; beyond that, updates gather until a
 * confirm comes back (back-pressure, never an unbounded buffer of sends).
 *
 * Order is kept: messages leave in report order on one channel, so the inbox receives them
 * in that order (and the status rules would absorb any reordering anyway).
 */
export function createStatusReporter(opts: {
  publisher: Publisher;
  inbox: string;
  source: () => Source;
  /** Extra fields for each message, computed when it is sent (the leader's utilization). */
  extras?: () => Pick<StatusMessage, "utilization">;
  maxInFlight?: number;
  /** RTB_BROKER_MAX_MESSAGE_BYTES: a turn's updates are cut into messages of at most this. */
  maxMessageBytes: number;
}): StatusReporter {
  const maxInFlight = opts.maxInFlight ?? 64;
  const queue: Waiting[] = [];
  let inFlight = 0;
  let scheduled = false;

  function pump() {
    scheduled = false;
    while (inFlight < maxInFlight && queue.length > 0) {
      const batch: Waiting[] = [];
      let size = 0;
      while (queue.length > 0 && (batch.length === 0 || size + queue[0]!.updates.length <= MAX_UPDATES)) {
        const w = queue.shift()!;
        batch.push(w);
        size += w.updates.length;
      }
      send(batch);
    }
  }

  function send(batch: Waiting[]) {
    inFlight++;
    // Encoding runs inside the chain, so an update that cannot be encoded rejects its callers
    // (who hand their deliveries back or dead-letter them) instead of throwing out of pump().
    Promise.resolve().then(async () => {
      const envelope = { v: 1 as const, type: "status" as const, source: opts.source(), ...opts.extras?.() };
      const publish = (updates: StatusUpdate[]) => opts.publisher.publish("", opts.inbox, encodeMessage({ ...envelope, updates } satisfies StatusMessage));
      const entries = batch.flatMap((waiting) => waiting.updates.map((update) => ({ update, waiting })));
      // Cut by bytes too: the updates of one turn may carry more than one message can hold.
      const parts = splitBySize(entries, { maxCount: MAX_UPDATES, maxBytes: opts.maxMessageBytes, overhead: statusOverhead(envelope), size: (e) => jsonBytes(e.update) });
      const failed = new Map<Waiting, unknown>();
      await Promise.all(
        parts.map(async (part) => {
          try {
            await publish(part.map((e) => e.update));
          } catch (err) {
            // The broker's max_message_size is below ours and this message went over it: its
            // other updates are not at fault, so each goes again alone, and only those refused
            // alone fail their callers (with MessageTooLargeError, which they can act on).
            if (!(err instanceof MessageTooLargeError) || part.length === 1) {
              for (const e of part) if (!failed.has(e.waiting)) failed.set(e.waiting, err);
              return;
            }
            await Promise.all(
              part.map((e) =>
                publishAlone(() => publish([e.update])).catch((alone: unknown) => {
                  if (!failed.has(e.waiting)) failed.set(e.waiting, alone);
                }),
              ),
            );
          }
        }),
      );
      return failed;
    }).then(
      (failed) => {
        for (const w of batch) {
          if (failed.has(w)) w.reject(failed.get(w));
          else w.resolve();
        }
      },
      (err: unknown) => {
        for (const w of batch) w.reject(err);
      },
    ).finally(() => {
      inFlight--;
      pump();
    });
  }

  return {
    report(updates) {
      if (updates.length === 0) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        queue.push({ updates, resolve, reject });
        if (!scheduled) {
          scheduled = true;
          setImmediate(pump);
        }
      });
    },
  };
}
