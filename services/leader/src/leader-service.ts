import {
  budget,
  within,
  createPublisher,
  defaultInstanceId,
  serveMetricsAndConnect,
  startHeartbeat,
  type Heartbeat,
  type Logger,
} from "@rtb/runtime";
import type { LeaderConfig } from "./config.ts";
import { createLeaderMetrics, type LeaderMetrics } from "./leader-metrics.ts";
import { startRouter, type LeaderStats } from "./router.ts";
import { startTracker } from "./tracker.ts";

export interface LeaderService {
  id: string;
  stats: LeaderStats;
  metrics: LeaderMetrics;
  /** GET /metrics, when RTB_METRICS_PORT is set. */
  metricsUrl: string | null;
  stop(): Promise<void>;
}

export async function startLeaderService(config: LeaderConfig, logger: Logger): Promise<LeaderService> {
  const id = config.RTB_LEADER_ID ?? defaultInstanceId("leader");
  // Every line this leader logs says which leader it is (two may run: one active, one standby).
  const log = logger.child({ leaderId: id });
  const stats: LeaderStats = { routed: 0, unroutable: 0, deadLettered: 0 };
  const metrics = createLeaderMetrics(stats);
  const { broker, metricsServer } = await serveMetricsAndConnect(config, metrics, log);
  const topology = broker.topology;
  const tracker = startTracker(broker, log, config.RTB_TRACKER_REFRESH_MS);
  let publisher, router, heartbeat: Heartbeat | undefined;
  try {
    publisher = await createPublisher(broker, "leader", log, { metrics, maxMessageBytes: config.RTB_BROKER_MAX_MESSAGE_BYTES });
    heartbeat = startHeartbeat({ service: "leader", id, publisher, topology, everyMs: config.RTB_HEARTBEAT_MS, logger: log });
    router = await startRouter({ broker, publisher, tracker, heartbeat, logger: log, prefetch: config.RTB_LEADER_PREFETCH, maxMessageBytes: config.RTB_BROKER_MAX_MESSAGE_BYTES, stats, metrics });
  } catch (err) {
    heartbeat?.stop();
    tracker.stop();
    await broker.close();
    await metricsServer?.stop();
    throw err;
  }
  log.info({ outbox: topology.box }, "leader ready (active when it holds the outbox's single active consumer)");
  return {
    id,
    stats,
    metrics,
    metricsUrl: metricsServer?.url ?? null,
    async stop() {
      const { left } = budget(config.RTB_SHUTDOWN_TIMEOUT_MS);
      // Messages in hand are routed and acked, or handed back; then confirms and the connection.
      await router.stop(left(1_000));
      heartbeat.stop();
      tracker.stop();
      await within(publisher.drain(), left(500));
      await within(broker.close(), left());
      // Last, so the final counts can still be scraped while the rest stops.
      if (metricsServer) await within(metricsServer.stop(), left());
    },
  };
}
