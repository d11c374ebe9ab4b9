import { ConfigError, createLifecycle, createLogger } from "@rtb/runtime";
import { loadApiConfig } from "./config.ts";
import { startApiService } from "./api-service.ts";

// The composition root: the only place that reads process.env and installs signal handlers.
let config;
try {
  config = loadApiConfig(process.env);
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  console.error(`rtb api: ${err.message}`);
  process.exit(2);
}
const logger = createLogger({ service: "api", level: config.RTB_LOG_LEVEL, format: config.RTB_LOG_FORMAT });
const lifecycle = createLifecycle(logger, config.RTB_SHUTDOWN_TIMEOUT_MS);
try {
  const api = await startApiService(config, logger, { listen: true, signal: lifecycle.signal });
  lifecycle.onStop("api", () => api.stop());
} catch (err) {
  if (lifecycle.signal.aborted) await lifecycle.shutdown(0, "stopped during start");
  logger.fatal({ err: (err as Error).message }, "cannot start the api");
  await lifecycle.shutdown(1, "start failed");
}
