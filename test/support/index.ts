export * from "./fixtures.ts";
export * from "./servers.ts";
export * from "./system.ts";
export * from "./invariants.ts";
