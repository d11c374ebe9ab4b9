import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { asyncApiDocument } from "@rtb/protocol";
import { brokerLayout, HEARTBEAT_DEFAULT_MS, HEARTBEAT_MAX_MS, SEEN_RECENTLY_MS, type Topology } from "@rtb/runtime";
import type { AppSettings } from "./deps.ts";
import { routes, serve } from "./routes.ts";
import { VERSION } from "./openapi-document.ts";

/**
 * GET /asyncapi.json: the broker protocol as an AsyncAPI 3.0 document, written from the
 * topology this api declares (its RTB_BROKER_PREFIX, RTB_BROKER_BOX, queue type and delivery
 * limit) and from the zod schemas every consumer validates with, for agents in any language.
 */
export function asyncApiRoutes(topology: Topology, settings: AppSettings): OpenAPIHono {
  const app = routes();
  const body = asyncApiDocument({
    layout: brokerLayout(topology),
    broker: settings.broker,
    maxMessageBytes: settings.broker.maxMessageBytes,
    heartbeat: { defaultMs: HEARTBEAT_DEFAULT_MS, maxMs: HEARTBEAT_MAX_MS, seenRecentlyMs: SEEN_RECENTLY_MS },
    processingTimeoutMs: settings.processingTimeoutMs,
    version: VERSION,
  });
  const route = createRoute({
    method: "get",
    path: "/asyncapi.json",
    tags: ["meta"],
    summary: "The broker protocol: AsyncAPI 3.0, every exchange, queue (with its arguments) and message rtb uses, generated from the topology and the message schemas",
    responses: { 200: { description: "The AsyncAPI document (docs/protocol.md is its guide)." } },
  });
  serve(app, route, (c) => c.json(body, 200));
  return app;
}
