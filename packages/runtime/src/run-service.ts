import type { Logger } from "pino";
import { ConfigError, type Env } from "./config.ts";
import { createLifecycle, within, type Lifecycle } from "./shutdown.ts";
import { createLogger, type LoggerOptions } from "./logger.ts";
import { loadTraceConfig, type TraceConfig } from "./trace-config.ts";
import { startTracing, type Tracing } from "./tracing.ts";

interface ServiceBasics {
  RTB_LOG_LEVEL: LoggerOptions["level"];
  RTB_LOG_FORMAT: LoggerOptions["format"];
  RTB_SHUTDOWN_TIMEOUT_MS: number;
}

/**
 * What every service's main.ts does: validate the environment (a bad variable: its message
 * on stderr, exit 2), create the logger and the lifecycle, start the service (failure: a
 * fatal log line, exit 1), and stop it on SIGTERM/SIGINT/SIGHUP. Run by `npm run` (npm sets
 * npm_lifecycle_event), it also stops when npm exits, so no way of stopping npm leaves it behind.
 */
export async function runService<C extends ServiceBasics>(
  service: string,
  env: Env,
  load: (env: Env) => C,
  start: (config: C, logger: Logger, lifecycle: Lifecycle, tracing: Tracing) => Promise<{ stop(): Promise<void> }>,
): Promise<void> {
  let config: C;
  let traceConfig: TraceConfig;
  try {
    config = load(env);
    traceConfig = loadTraceConfig(env, service);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`rtb ${service}: ${err.message}`);
    process.exit(2);
  }
  const logger = createLogger({ service, level: config.RTB_LOG_LEVEL, format: config.RTB_LOG_FORMAT });
  const lifecycle = createLifecycle(logger, config.RTB_SHUTDOWN_TIMEOUT_MS, { watchParent: env.npm_lifecycle_event !== undefined });
  const tracing = await startTracing(traceConfig);
  if (tracing.enabled) logger.info({ url: traceConfig.url, serviceName: traceConfig.serviceName }, "exporting traces (OTLP/HTTP)");
  // Registered first, so it runs last: the spans of the shutdown itself are sent too, for at
  // most 2 s (a collector that is down must not hold the exit).
  lifecycle.onStop("tracing", async () => {
    const sent = await within(tracing.shutdown().catch((err: unknown) => logger.warn({ err }, "could not send the last spans")), 2_000);
    if (!sent) logger.warn("the last spans were not sent within 2 s");
  });
  try {
    const running = await start(config, logger, lifecycle, tracing);
    lifecycle.onStop(service, () => running.stop());
  } catch (err) {
    // Interrupted by a signal while starting: the shutdown under way exits (0).
    if (lifecycle.signal.aborted) return;
    logger.fatal({ err: (err as Error).message }, `cannot start the ${service}`);
    await lifecycle.shutdown(1, "start failed");
  }
}
