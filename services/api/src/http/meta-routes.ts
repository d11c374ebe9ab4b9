import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { meta, metaView } from "@rtb/protocol";
import type { AppSettings } from "./deps.ts";
import { json, routes, serve } from "./routes.ts";

/**
 * GET /meta: the vocabulary (@rtb/protocol's statuses, their sets, the name rules) and the
 * request limits this api runs with, for clients that cannot import the protocol package:
 * the dashboard reads its status list here.
 */
export function metaRoutes(settings: AppSettings): OpenAPIHono {
  const app = routes();
  const body = meta({ maxBatch: settings.maxBatch, maxBodyBytes: settings.maxBodyBytes, maxPayloadBytes: settings.maxPayloadBytes, maxAttempts: settings.maxAttempts });
  const route = createRoute({
    method: "get",
    path: "/meta",
    tags: ["meta"],
    summary: "The vocabulary: unit statuses in order, their sets, the kind and name rules, and this api's request limits",
    responses: { 200: { description: "What a client needs to know to speak to this api.", content: json(metaView) } },
  });
  serve(app, route, (c) => c.json(body, 200));
  return app;
}
