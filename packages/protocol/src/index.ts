export * from "./statuses.ts";
export * from "./names.ts";
export * from "./messages.ts";
export * from "./workflows.ts";
export * from "./http/index.ts";
export * from "./asyncapi/index.ts";
