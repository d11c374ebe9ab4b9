import { createPublisher, defaultInstanceId, serveMetricsAndConnect, startHeartbeat, startService, within, type Logger, type Tracing } from "@rtb/runtime";
import type { LeaderConfig } from "./config.ts";
import { createLeaderMetrics, type LeaderMetrics } from "./leader-metrics.ts";
import { createLeaderStats, type LeaderStats } from "./leader-stats.ts";
import { startRouter } from "./router.ts";
import { startTracker } from "./tracker.ts";

export interface LeaderService {
  id: string;
  stats: LeaderStats;
  metrics: LeaderMetrics;
  /** GET /metrics, when RTB_METRICS_PORT is set. */
  metricsUrl: string | null;
  stop(): Promise<void>;
}

export async function startLeaderService(config: LeaderConfig, logger: Logger, opts: { tracing?: Tracing } = {}): Promise<LeaderService> {
  const id = config.RTB_LEADER_ID ?? defaultInstanceId("leader");
  // Every line this leader logs says which leader it is (two may run: one active, one standby).
  const log = logger.child({ leaderId: id });
  const stats = createLeaderStats();
  const metrics = createLeaderMetrics(stats);
  // Stopped in reverse: messages in hand are routed and acked (or handed back), then confirms, the connection, the metrics listener.
  const leader = await startService(log, config.RTB_SHUTDOWN_TIMEOUT_MS, async (parts) => {
    const { broker, metricsServer, ready } = await serveMetricsAndConnect(config, metrics, log, parts);
    const tracker = startTracker(broker, log, config.RTB_TRACKER_REFRESH_MS);
    parts.add("tracker", () => tracker.stop());
    const publisher = await createPublisher(broker, "leader", log, { metrics, maxMessageBytes: config.RTB_BROKER_MAX_MESSAGE_BYTES });
    parts.add("publisher", (left) => within(publisher.drain(), left(500)));
    const heartbeat = startHeartbeat({ service: "leader", id, publisher, topology: broker.topology, everyMs: config.RTB_HEARTBEAT_MS, logger: log });
    parts.add("heartbeat", () => heartbeat.stop());
    const router = await startRouter({ broker, publisher, tracker, heartbeat, logger: log, prefetch: config.RTB_LEADER_PREFETCH, maxMessageBytes: config.RTB_BROKER_MAX_MESSAGE_BYTES, maxJobUnits: config.RTB_JOB_MAX_UNITS, stats, metrics, tracing: opts.tracing });
    parts.add("router", (left) => router.stop(left(1_000)));
    ready();
    log.info({ outbox: broker.topology.box }, "leader ready (active when it holds the outbox's single active consumer)");
    return { metricsUrl: metricsServer?.url ?? null };
  });
  return { id, stats, metrics, ...leader };
}
