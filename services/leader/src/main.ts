import { ConfigError, createLifecycle, createLogger } from "@rtb/runtime";
import { loadLeaderConfig } from "./config.ts";
import { startLeaderService } from "./leader-service.ts";

// The composition root: the only place that reads process.env and installs signal handlers.
let config;
try {
  config = loadLeaderConfig(process.env);
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  console.error(`rtb leader: ${err.message}`);
  process.exit(2);
}
const logger = createLogger({ service: "leader", level: config.RTB_LOG_LEVEL, format: config.RTB_LOG_FORMAT });
const lifecycle = createLifecycle(logger, config.RTB_SHUTDOWN_TIMEOUT_MS);
try {
  const leader = await startLeaderService(config, logger);
  lifecycle.onStop("leader", () => leader.stop());
} catch (err) {
  logger.fatal({ err: (err as Error).message }, "cannot start the leader");
  await lifecycle.shutdown(1, "start failed");
}
