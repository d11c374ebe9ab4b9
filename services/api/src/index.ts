export * from "./config.ts";
export * from "./api-service.ts";
export { createApp } from "./http/app.ts";
export type { AppDeps } from "./http/deps.ts";
export type { ApiStats } from "./stats.ts";
export * from "./check.ts";
export type { ApiMetrics } from "./api-metrics.ts";
export { startCallbackDeliverer, type CallbackDeliverer, type CallbackSettings } from "./callback-deliverer.ts";
export { createCancelAnnouncer, type CancelAnnouncer } from "./cancel-announcer.ts";
