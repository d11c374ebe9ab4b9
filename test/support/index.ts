export * from "./fixtures.ts";
export * from "./servers.ts";
export * from "./system.ts";
export * from "./processes.ts";
export * from "./runs.ts";
export * from "./server-control.ts";
export * from "./workflow-runs.ts";
export * from "./pgbouncer.ts";
