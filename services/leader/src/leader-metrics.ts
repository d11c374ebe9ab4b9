import { counterFrom, createServiceMetrics, Gauge, Histogram, labelledCounterFrom, type ServiceMetrics } from "@rtb/runtime";
import type { LeaderStats } from "./leader-stats.ts";

/** The leader's metrics: the common ones, its routing counters, and what it has in hand. */
export interface LeaderMetrics extends ServiceMetrics {
  /** Outbox deliveries taken and not yet settled (acked or handed back). */
  readonly inFlight: Gauge;
  /** Units per job message published (job-size.ts: 1 while the kind's queue is shallow). */
  readonly unitsPerJob: Histogram;
}

/** The broker's reconnects are added once it is connected (countReconnects). */
export function createLeaderMetrics(stats: LeaderStats): LeaderMetrics {
  const common = createServiceMetrics("leader");
  const { registry } = common;
  counterFrom(registry, "rtb_leader_units_routed_total", "Units published as jobs into jobs.<kind> and reported queued", () => stats.routed);
  counterFrom(
    registry,
    "rtb_leader_units_unroutable_total",
    "Units reported as errors instead: a kind no agent consumes, or a unit that fails its schema",
    () => stats.unroutable,
  );
  labelledCounterFrom(registry, "rtb_dead_lettered_total", "Messages this leader dead-lettered, and units dropped from one because they cannot be identified", "reason", () => ({
    invalid_dispatch_message: stats.deadLettered,
  }));
  return {
    ...common,
    inFlight: new Gauge({ name: "rtb_leader_messages_in_flight", help: "Outbox deliveries in hand: taken, not yet acked or handed back", registers: [registry] }),
    unitsPerJob: new Histogram({
      name: "rtb_leader_units_per_job",
      help: "Units per job message published into jobs.<kind>: 1 while the queue is shallow, up to RTB_JOB_MAX_UNITS while it is deep",
      buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
      registers: [registry],
    }),
  };
}
