import { z } from "zod";
import { int, loadConfig, type Env } from "./config.ts";

/**
 * The OpenTelemetry variables rtb honours, with their standard names and meanings
 * (opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables): tracing is on
 * when an OTLP endpoint is set, off otherwise. Not part of the services' RTB_* schemas: they
 * are unset in a deployment that does not trace. The exporter reads the rest of its own
 * standard variables itself (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION, ...).
 */
const otlpUrl = z.url({ protocol: /^https?$/, message: "expected an http(s) URL (for example http://localhost:4318)" }).optional();

export const traceConfigSchema = z.object({
  /** The collector's base URL: traces go to <it>/v1/traces. */
  OTEL_EXPORTER_OTLP_ENDPOINT: otlpUrl,
  /** The traces URL itself, used as is; wins over OTEL_EXPORTER_OTLP_ENDPOINT. */
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: otlpUrl,
  /** true: no tracing even with an endpoint set. */
  OTEL_SDK_DISABLED: z.enum(["true", "false"], { message: "expected true or false" }).default("false"),
  /** The service.name of this process's spans; default rtb-<service>. */
  OTEL_SERVICE_NAME: z.string().max(255).optional(),
  /** The batch span processor: how long spans wait before they are sent, how many wait at most, how many go at once. */
  OTEL_BSP_SCHEDULE_DELAY: int(5_000, { min: 0, max: 3_600_000 }),
  OTEL_BSP_MAX_QUEUE_SIZE: int(2_048, { min: 1, max: 10_000_000 }),
  OTEL_BSP_MAX_EXPORT_BATCH_SIZE: int(512, { min: 1, max: 10_000_000 }),
});

export interface TraceConfig {
  /** Where spans are sent (OTLP/HTTP, JSON); null: tracing is off. */
  url: string | null;
  serviceName: string;
  scheduleDelayMs: number;
  maxQueueSize: number;
  maxExportBatchSize: number;
}

/** The tracing settings of `service` (api, leader, agent) from the environment; a bad value is a ConfigError naming it. */
export function loadTraceConfig(env: Env, service: string): TraceConfig {
  const c = loadConfig(traceConfigSchema, env);
  const base = c.OTEL_EXPORTER_OTLP_ENDPOINT;
  const url = c.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? (base === undefined ? undefined : `${base.replace(/\/+$/, "")}/v1/traces`);
  return {
    url: c.OTEL_SDK_DISABLED === "true" ? null : (url ?? null),
    serviceName: c.OTEL_SERVICE_NAME ?? `rtb-${service}`,
    scheduleDelayMs: c.OTEL_BSP_SCHEDULE_DELAY,
    maxQueueSize: c.OTEL_BSP_MAX_QUEUE_SIZE,
    maxExportBatchSize: Math.min(c.OTEL_BSP_MAX_EXPORT_BATCH_SIZE, c.OTEL_BSP_MAX_QUEUE_SIZE),
  };
}
