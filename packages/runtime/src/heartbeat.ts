import type { Logger } from "pino";
import { int } from "./config.ts";
import { encodeMessage, type Source } from "@rtb/protocol";
import type { Publisher } from "./publisher.ts";
import type { Topology } from "./topology.ts";

/**
 * How often leaders and agents tell the api they are alive (with their counters). At most
 * 10 s: GET / lists the instances seen in the last 30 s (SEEN_RECENTLY_MS).
 */
export const HEARTBEAT_DEFAULT_MS = 5_000;
export const HEARTBEAT_MAX_MS = 10_000;
export const heartbeatConfig = { RTB_HEARTBEAT_MS: int(HEARTBEAT_DEFAULT_MS, { min: 100, max: HEARTBEAT_MAX_MS }) };
export const SEEN_RECENTLY_MS = 30_000;

export interface Heartbeat {
  /** Who we are, for every status message this process sends. */
  readonly source: Source;
  /** Count a message this process dead-lettered, and report it soon. */
  deadLettered(n?: number): void;
  /**
   * An agent, once it consumes its job queues: the kinds it serves, sent with every heartbeat
   * from now on (and at once), so units waiting for an agent of those kinds go back to the backlog.
   */
  announceKinds(kinds: readonly string[]): void;
  stop(): void;
}

/**
 * A leader's or agent's heartbeat: an empty status message to the inbox every `everyMs`,
 * carrying this process lifetime (`source.startedAt`) and its running counters. The api
 * records it per lifetime (service_instances), so GET / shows who is alive and how many
 * messages each dead-lettered, across restarts. A heartbeat that is not confirmed is simply
 * sent again next time: counters are totals, never deltas.
 */
export function startHeartbeat(opts: {
  service: Source["service"];
  id: string;
  publisher: Publisher;
  topology: Topology;
  everyMs: number;
  logger: Logger;
}): Heartbeat {
  const source: Source = { service: opts.service, id: opts.id, startedAt: new Date().toISOString() };
  let deadLettered = 0;
  let kinds: string[] | undefined;
  let soon: NodeJS.Timeout | undefined;

  function beat() {
    opts.publisher
      .publish("", opts.topology.inbox, encodeMessage({ v: 1, type: "status", source, updates: [], counters: { deadLettered }, ...(kinds ? { kinds } : {}) }))
      .catch((err: unknown) => opts.logger.debug({ err: (err as Error).message }, "heartbeat not confirmed; the next one repeats it"));
  }

  const timer = setInterval(beat, opts.everyMs);
  timer.unref();
  // The first one at once: the api knows about this instance before its first report.
  beat();

  return {
    source,
    deadLettered(n = 1) {
      deadLettered += n;
      soon ??= setTimeout(() => {
        soon = undefined;
        beat();
      }, 200);
    },
    announceKinds(served) {
      kinds = [...served];
      beat();
    },
    stop() {
      clearInterval(timer);
      clearTimeout(soon);
    },
  };
}
