import { connectBrokerFromConfig, createPublisher, defaultInstanceId, type Logger } from "@rtb/runtime";
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
  let publisher, router;
  try {
    publisher = await createPublisher(broker, "leader", logger);
    router = await startRouter({ broker, publisher, tracker, logger, leaderId: id, prefetch: config.RTB_LEADER_PREFETCH, stats });
  } catch (err) {
    tracker.stop();
    await broker.close();
    throw err;
  }
  logger.info({ leaderId: id, outbox: topology.box }, "leader ready (active when it holds the outbox's single active consumer)");
  return {
    id,
    stats,
    async stop() {
      await router.stop(config.RTB_SHUTDOWN_TIMEOUT_MS);
      tracker.stop();
      await publisher.drain();
      await broker.close();
    },
  };
}
