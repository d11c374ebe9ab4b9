export * from "./config.ts";
export * from "./leader-service.ts";
