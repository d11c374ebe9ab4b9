import { budget, within, connectBrokerFromConfig, createPublisher, defaultInstanceId, startHeartbeat, type Heartbeat, type Logger } from "@rtb/runtime";
import type { LeaderConfig } from "./config.ts";
import { startRouter, type LeaderStats } from "./router.ts";
import { startTracker } from "./tracker.ts";

export interface LeaderService {
  id: string;
  stats: LeaderStats;
  stop(): Promise<void>;
}

export async function startLeaderService(config: LeaderConfig, logger: Logger): Promise<LeaderService> {
  const id = config.RTB_LEADER_ID ?? defaultInstanceId("leader");
  const broker = await connectBrokerFromConfig(config, logger);
  const topology = broker.topology;
  const tracker = startTracker(broker, logger, config.RTB_TRACKER_REFRESH_MS);
  const stats: LeaderStats = { routed: 0, unroutable: 0, deadLettered: 0 };
  let publisher, router, heartbeat: Heartbeat | undefined;
  try {
    publisher = await createPublisher(broker, "leader", logger);
    heartbeat = startHeartbeat({ service: "leader", id, publisher, topology, everyMs: config.RTB_HEARTBEAT_MS, logger });
    router = await startRouter({ broker, publisher, tracker, heartbeat, logger, prefetch: config.RTB_LEADER_PREFETCH, stats });
  } catch (err) {
    heartbeat?.stop();
    tracker.stop();
    await broker.close();
    throw err;
  }
  logger.info({ leaderId: id, outbox: topology.box }, "leader ready (active when it holds the outbox's single active consumer)");
  return {
    id,
    stats,
    async stop() {
      const { left } = budget(config.RTB_SHUTDOWN_TIMEOUT_MS);
      // Messages in hand are routed and acked, or handed back; then confirms and the connection.
      await router.stop(left(1_000));
      heartbeat.stop();
      tracker.stop();
      await within(publisher.drain(), left(500));
      await within(broker.close(), left());
    },
  };
}
