export * from "./config.ts";
export * from "./leader-service.ts";
export type { LeaderStats } from "./leader-stats.ts";
export type { LeaderMetrics } from "./leader-metrics.ts";
export { MAX_TRACKED_KINDS, startTracker, type Tracker } from "./tracker.ts";
export { unitsPerJob } from "./job-size.ts";
export { encodeJob } from "./router.ts";
