export * from "./config.ts";
export * from "./handler.ts";
export { UnitCancelledError } from "./cancellations.ts";
export * from "./simulate.ts";
export * from "./builtin-handlers.ts";
export * from "./agent-service.ts";
export * from "./run-agent.ts";
export type { AgentStats } from "./agent-stats.ts";
export type { AgentMetrics } from "./agent-metrics.ts";
