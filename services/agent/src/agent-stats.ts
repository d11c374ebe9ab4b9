/** The agent's in-process counters: the worker counts, the metrics (agent-metrics.ts) and tests read. */
export interface AgentStats {
  succeeded: number;
  failed: number;
  inFlight: number;
  deadLettered: number;
}

export const createAgentStats = (): AgentStats => ({ succeeded: 0, failed: 0, inFlight: 0, deadLettered: 0 });
