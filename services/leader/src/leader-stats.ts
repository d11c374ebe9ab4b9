/** The leader's in-process counters: the router counts, the metrics (leader-metrics.ts) and tests read. */
export interface LeaderStats {
  routed: number;
  unroutable: number;
  deadLettered: number;
}

export const createLeaderStats = (): LeaderStats => ({ routed: 0, unroutable: 0, deadLettered: 0 });
