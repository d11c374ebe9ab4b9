import type { Broker, Logger } from "@rtb/runtime";
import type { Utilization } from "@rtb/protocol";

export interface Tracker {
  /** A kind the leader has routed: its queue is watched from now on. */
  observe(kind: string): void;
  /**
   * The latest reading of `jobs.<kind>` (undefined before the first), for sizing jobs
   * (job-size.ts). A reading older than DEPTH_FRESH_MS is refreshed in the background, so
   * routing never waits for it and a kind being routed is read at most every DEPTH_FRESH_MS.
   */
  depth(kind: string): { ready: number; consumers: number } | undefined;
  snapshot(): Utilization;
  stop(): void;
}

/**
 * Kinds watched at most. Each costs a passive queue check per refresh and a line in every
 * `queued` report's utilization, so producers enqueueing ever new kinds must not grow either
 * without bound; past it, further kinds are routed as ever but not watched (a warning says so).
 */
export const MAX_TRACKED_KINDS = 1_000;

/** How old a queue's reading may be for sizing its jobs: the full refresh is every second, too slow for that. */
export const DEPTH_FRESH_MS = 50;

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
  // Per kind routed: its latest reading and when it was taken, and whether one is on its way.
  const depths = new Map<string, { ready: number; consumers: number; at: number }>();
  const reading = new Set<string>();

  async function readDepth(kind: string) {
    reading.add(kind);
    try {
      const q = await broker.inspectQueue(broker.topology.jobQueue(kind));
      if (q?.exists) depths.set(kind, { ready: q.messages, consumers: q.consumers, at: performance.now() });
      else if (q) depths.delete(kind);
    } finally {
      reading.delete(kind);
    }
  }

  async function refresh() {
    if (refreshing || kinds.size === 0 || !broker.connected) return;
    refreshing = true;
    try {
      const next: Utilization["kinds"] = {};
      for (const kind of kinds) {
        const q = await broker.inspectQueue(broker.topology.jobQueue(kind));
        if (q?.exists) {
          next[kind] = { ready: q.messages, consumers: q.consumers };
          depths.set(kind, { ...next[kind], at: performance.now() });
        } else if (q) {
          kinds.delete(kind);
          depths.delete(kind);
        }
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
    depth(kind) {
      const d = depths.get(kind);
      if ((!d || performance.now() - d.at > DEPTH_FRESH_MS) && !reading.has(kind) && broker.connected && (kinds.has(kind) || depths.has(kind))) {
        void readDepth(kind).catch(() => {});
      }
      return d && { ready: d.ready, consumers: d.consumers };
    },
    snapshot: () => current,
    stop: () => clearInterval(timer),
  };
}
