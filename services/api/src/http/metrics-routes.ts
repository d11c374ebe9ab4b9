import { Hono } from "hono";
import { z } from "zod";
import type { AppDeps } from "./app.ts";
import type { ApiDocs } from "./openapi.ts";

/**
 * GET /metrics: this api's metrics in the Prometheus text format (README "Metrics and logs").
 * A read like any other: with RTB_API_TOKEN and RTB_API_TOKEN_READS, the scraper sends the token.
 */
export function metricsRoutes({ metrics }: Pick<AppDeps, "metrics">, docs: ApiDocs): Hono {
  const app = new Hono();
  docs.add({
    method: "get",
    path: "/metrics",
    tags: ["metrics"],
    auth: "read",
    summary: "Prometheus metrics: units by status, flow control, message counters, durations (text format 0.0.4)",
    description: "The metric families are listed in the README, section \"Metrics and logs\". The unit counts are read from the tallies at scrape time.",
    responses: { 200: { description: "The metrics, in the Prometheus text exposition format.", schema: z.string(), contentType: "text/plain; version=0.0.4" } },
  });
  app.get("/metrics", async (c) => {
    const text = await metrics.metrics();
    return c.body(text, 200, { "content-type": metrics.contentType });
  });
  return app;
}
