import type { Broker, Logger } from "@rtb/runtime";
import type { Utilization } from "@rtb/protocol";

export interface Tracker {
  /** A kind the leader has routed: its queue is watched from now on. */
  observe(kind: string): void;
  snapshot(): Utilization;
  stop(): void;
}

/**
 * Kinds watched at most. Each costs a passive queue check per refresh and a line in every
 * `queued` report's utilization, so producers enqueueing ever new kinds must not grow either
 * without bound; past it, further kinds are routed as ever but not watched (a warning says so).
 */
export const MAX_TRACKED_KINDS = 1_000;

/**
 * The job tracker's utilization: per kind, the jobs waiting in `jobs.<kind>` and the agents
 * consuming it, read with passive queue checks every `refreshMs` (never per message). A kind
 * whose queue does not exist (no agent ever declared it) is dropped at the next refresh and
 * watched again when routed again, so the set holds only kinds that have agents.
 */
export function startTracker(broker: Broker, logger: Logger, refreshMs: number, maxKinds = MAX_TRACKED_KINDS): Tracker {
  const kinds = new Set<string>();
  let current: Utilization = { at: new Date().toISOString(), kinds: {} };
  let refreshing = false;
  let untracked = 0;

  async function refresh() {
    if (refreshing || kinds.size === 0 || !broker.connected) return;
    refreshing = true;
    try {
      const next: Utilization["kinds"] = {};
      for (const kind of kinds) {
        const q = await broker.inspectQueue(broker.topology.jobQueue(kind));
        if (q?.exists) next[kind] = { ready: q.messages, consumers: q.consumers };
        else if (q) kinds.delete(kind);
      }
      current = { at: new Date().toISOString(), kinds: next };
      if (untracked > 0) {
        logger.warn({ untracked, maxKinds }, `watching at most ${maxKinds} kinds with agents: ${untracked} routing(s) of further kinds were not watched`);
        untracked = 0;
      }
    } catch (err) {
      logger.debug({ err }, "tracker refresh failed");
    } finally {
      refreshing = false;
    }
  }

  const timer = setInterval(() => void refresh(), refreshMs);
  return {
    observe(kind) {
      if (kinds.has(kind)) return;
      if (kinds.size >= maxKinds) {
        untracked++;
        return;
      }
      kinds.add(kind);
      void refresh();
    },
    snapshot: () => current,
    stop: () => clearInterval(timer),
  };
}
