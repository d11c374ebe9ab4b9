/** The agent's in-process counters: the worker counts, the metrics (agent-metrics.ts) and tests read. */
export interface AgentStats {
  succeeded: number;
  failed: number;
  inFlight: number;
  deadLettered: number;
  /** Handlers aborted because their attempt was cancelled. */
  cancelled: number;
  /** Jobs of cancelled attempts acked without running their handler. */
  dropped: number;
}

export const createAgentStats = (): AgentStats => ({ succeeded: 0, failed: 0, inFlight: 0, deadLettered: 0, cancelled: 0, dropped: 0 });
