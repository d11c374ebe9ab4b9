export * from "./config.ts";
export * from "./leader-service.ts";
export type { LeaderMetrics } from "./leader-metrics.ts";
