export * from "./fields.ts";
export * from "./requests.ts";
export * from "./responses.ts";
export * from "./meta.ts";
export * from "./workflows.ts";
export * from "./callbacks.ts";
