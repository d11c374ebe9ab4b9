export * from "./layout.ts";
export * from "./document.ts";
