import { Hono, type Context } from "hono";
import type { AppDeps } from "./app.ts";

/**
 * The live dashboard (GET / from a browser) and its server-sent events stream (GET /events).
 * Skeleton: being filled in.
 */
export function dashboardRoutes(_deps: AppDeps): Hono {
  const app = new Hono();
  return app;
}

/** A browser asks for HTML first; curl and scripts (Accept: * / * or JSON) get JSON. */
export function prefersHtml(c: Context): boolean {
  const accept = c.req.header("accept") ?? "";
  return /text\/html/i.test(accept);
}

export function dashboardPage(c: Context): Response {
  return c.html("<!doctype html><title>rtb</title><p>dashboard coming</p>");
}
