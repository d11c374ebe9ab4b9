import type { Broker, Logger, Utilization } from "@rtb/runtime";

export interface Tracker {
  /** A kind the leader has routed: its queue is watched from now on. */
  observe(kind: string): void;
  snapshot(): Utilization;
  stop(): void;
}

/**
 * The job tracker's utilization: per kind, the jobs waiting in `jobs.<kind>` and the agents
 * consuming it, read with passive queue checks every `refreshMs` (never per message).
 */
export function startTracker(broker: Broker, logger: Logger, refreshMs: number): Tracker {
  const kinds = new Set<string>();
  let current: Utilization = { at: new Date().toISOString(), kinds: {} };
  let refreshing = false;

  async function refresh() {
    if (refreshing || kinds.size === 0 || !broker.connected) return;
    refreshing = true;
    try {
      const next: Utilization["kinds"] = {};
      for (const kind of kinds) {
        const q = await broker.inspectQueue(broker.topology.jobQueue(kind));
        if (q?.exists) next[kind] = { ready: q.messages, consumers: q.consumers };
      }
      current = { at: new Date().toISOString(), kinds: next };
    } catch (err) {
      logger.debug({ err }, "tracker refresh failed");
    } finally {
      refreshing = false;
    }
  }

  const timer = setInterval(() => void refresh(), refreshMs);
  return {
    observe(kind) {
      if (!kinds.has(kind)) {
        kinds.add(kind);
        void refresh();
      }
    },
    snapshot: () => current,
    stop: () => clearInterval(timer),
  };
}
