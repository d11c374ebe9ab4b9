import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { z } from "zod";
import type { AppDeps } from "./deps.ts";
import { routes, serve } from "./routes.ts";

/**
 * GET /metrics: this api's metrics in the Prometheus text format (README "Metrics and logs").
 * A read like any other: with RTB_API_TOKEN and RTB_API_TOKEN_READS, the scraper sends the token.
 */
export function metricsRoutes({ metrics }: Pick<AppDeps, "metrics">): OpenAPIHono {
  const app = routes();
  const route = createRoute({
    method: "get",
    path: "/metrics",
    tags: ["metrics"],
    summary: "Prometheus metrics: units by status, flow control, message counters, durations (text format 0.0.4)",
    description: "The metric families are listed in the README, section \"Metrics and logs\". The unit counts are read from the tallies at scrape time.",
    responses: { 200: { description: "The metrics, in the Prometheus text exposition format.", content: { "text/plain; version=0.0.4": { schema: z.string() } } } },
  });
  serve(app, route, async (c) => {
    const text = await metrics.metrics();
    return c.text(text, 200, { "Content-Type": metrics.contentType });
  });
  return app;
}
