import { createServiceMetrics, Counter, Gauge, Histogram, labelledCounterFrom, type ServiceMetrics } from "@rtb/runtime";
import { OUTCOMES } from "@rtb/protocol";
import type { AgentStats } from "./agent-stats.ts";

/** An agent's metrics: the common ones and its jobs, by kind. */
export interface AgentMetrics extends ServiceMetrics {
  readonly jobsInFlight: Gauge<"kind">;
  /** How long handlers ran, by kind and outcome (success | error | cancelled). */
  readonly handlerDuration: Histogram<"kind" | "outcome">;
  /** Jobs finished, by kind and outcome (success | error reported; cancelled: aborted, dropped: never run). */
  readonly jobs: Counter<"kind" | "outcome">;
}

/** How a job can end on an agent: reported (success, error), or its attempt cancelled (handler aborted, or dropped before it ran). */
export const JOB_OUTCOMES = [...OUTCOMES, "cancelled", "dropped"] as const;

/** The broker's reconnects are added once it is connected (countReconnects). */
export function createAgentMetrics(stats: AgentStats, kinds: readonly string[]): AgentMetrics {
  const common = createServiceMetrics("agent");
  const registers = [common.registry];
  labelledCounterFrom(common.registry, "rtb_dead_lettered_total", "Messages this agent dead-lettered, by reason", "reason", () => ({
    invalid_job_message: stats.deadLettered,
  }));
  const metrics: AgentMetrics = {
    ...common,
    jobsInFlight: new Gauge({ name: "rtb_agent_jobs_in_flight", help: "Jobs in hand (taken, not yet acked or handed back), by kind", labelNames: ["kind"], registers }),
    handlerDuration: new Histogram({
      name: "rtb_agent_handler_duration_seconds",
      help: "How long the handler ran for one job, by kind and outcome",
      labelNames: ["kind", "outcome"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers,
    }),
    jobs: new Counter({ name: "rtb_agent_jobs_total", help: "Jobs run and reported (success, error), or of a cancelled attempt (cancelled: handler aborted; dropped: never run), by kind and outcome", labelNames: ["kind", "outcome"], registers }),
  };
  // Every kind served appears from the start, at 0.
  for (const kind of kinds) {
    metrics.jobsInFlight.set({ kind }, 0);
    for (const outcome of JOB_OUTCOMES) metrics.jobs.inc({ kind, outcome }, 0);
  }
  return metrics;
}
