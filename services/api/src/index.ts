export * from "./config.ts";
export * from "./api-service.ts";
export { createApp, type AppDeps } from "./http/app.ts";
export type { ApiStats } from "./stats.ts";
export * from "./check.ts";
export type { ApiMetrics } from "./api-metrics.ts";
