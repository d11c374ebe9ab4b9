import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import { isUnavailableError, type Db } from "@rtb/db";
import type { Broker, Logger, Registry } from "@rtb/runtime";
import type { Dispatcher } from "../dispatcher.ts";
import type { ApiStats } from "../stats.ts";
import { InvalidRequestError, UnsupportedMediaTypeError, utf8Url } from "./validation.ts";
import { sameOrigin } from "./same-origin.ts";
import { controlRoutes } from "./control-routes.ts";
import { unitRoutes } from "./unit-routes.ts";
import { groupRoutes } from "./group-routes.ts";
import { healthRoutes } from "./health-routes.ts";
import { metricsRoutes } from "./metrics-routes.ts";
import { bearerAuth, type AuthOptions } from "./auth.ts";
import { dashboardRoutes } from "./dashboard.ts";
import { ApiDocs } from "./openapi.ts";

export interface AppSettings {
  /** RTB_API_MAX_BATCH */
  maxBatch: number;
  /** RTB_API_MAX_BODY_BYTES */
  maxBodyBytes: number;
  /** The largest payload one broker message can carry (maxPayloadBytes of RTB_BROKER_MAX_MESSAGE_BYTES) */
  maxPayloadBytes: number;
  /** RTB_MAX_ATTEMPTS: for units enqueued without maxAttempts */
  maxAttempts: number;
  /** RTB_DISPATCH_TIMEOUT_MS, RTB_PROCESSING_TIMEOUT_MS: what `stuck` means */
  dispatchTimeoutMs: number;
  processingTimeoutMs: number;
}

export interface AppDeps {
  auth: AuthOptions;
  db: Db;
  broker: Broker;
  dispatcher: Dispatcher;
  stats: ApiStats;
  /** This api's metrics registry (GET /metrics). */
  metrics: Registry;
  logger: Logger;
  maxQueue: number;
  settings: AppSettings;
  /** Aborted when the api starts stopping: long-lived responses (GET /events) end then. */
  closing: AbortSignal;
  /** How long the inbox has been unable to apply reports (InboxConsumer.failingForMs). */
  inboxFailingForMs?: () => number;
}

const VERSION = "0.1.0";

/** The HTTP surface: one sub-app per resource, one error handler, JSON everywhere. */
export function createApp(deps: AppDeps): Hono {
  const app = new Hono();
  const docs = new ApiDocs();
  // Where a request comes from is judged before anything else, token or not.
  app.use(sameOrigin());
  app.use(bearerAuth(deps.auth));
  app.use(utf8Url);
  app.use(
    bodyLimit({
      maxSize: deps.settings.maxBodyBytes,
      onError: (c) =>
        c.json(
          {
            error: "payload_too_large",
            field: "body",
            message: `the body is larger than ${deps.settings.maxBodyBytes} bytes (RTB_API_MAX_BODY_BYTES); send smaller batches`,
          },
          413,
        ),
    }),
  );
  app.route("/", controlRoutes(deps, docs));
  app.route("/units", unitRoutes(deps, docs));
  app.route("/groups", groupRoutes(deps, docs));
  app.route("/", healthRoutes(deps, docs));
  app.route("/", metricsRoutes(deps, docs));
  app.route("/", dashboardRoutes(deps));
  docs.add({
    method: "get",
    path: "/events",
    tags: ["dashboard"],
    auth: "read",
    summary: "Server-sent events: the state of things, throughput and recently active units, live",
    description: "Events `state` (the body of GET /), `throughput` and `units`, about once a second while anything changes. See docs/dashboard.md.",
    responses: { 200: { description: "An event stream (text/event-stream)." } },
  });

  const document = docs.add({
    method: "get",
    path: "/openapi.json",
    tags: ["meta"],
    auth: "read",
    summary: "This document: OpenAPI 3.1, generated from the schemas that validate requests",
    responses: { 200: { description: "The OpenAPI document." } },
  });
  let cached: object | undefined;
  app.get(document.path, (c) =>
    c.json(
      (cached ??= docs.document({
        version: VERSION,
        description: "rtb tracks every unit's status in PostgreSQL and keeps the broker's outbox topped up to RTB_BROADCAST_MAX_QUEUE. Errors are JSON `{error, field?, message}`.",
      })),
    ),
  );

  app.notFound((c) => c.json({ error: "not_found", message: `no route for ${c.req.method} ${c.req.path}` }, 404));
  app.onError((err, c) => {
    if (err instanceof InvalidRequestError) {
      return c.json({ error: "invalid_request", field: err.field, message: err.message }, 400);
    }
    if (err instanceof UnsupportedMediaTypeError) {
      return c.json({ error: "unsupported_media_type", field: err.field, message: err.message }, 415);
    }
    if (err instanceof HTTPException) return c.json({ error: "http_error", message: err.message }, err.status);
    if (isUnavailableError(err)) {
      deps.logger.warn({ err: err.message, path: c.req.path }, "request failed: PostgreSQL unavailable");
      c.header("Retry-After", "5");
      return c.json({ error: "database_unavailable", message: `PostgreSQL is not reachable (${err.message}); retry shortly` }, 503);
    }
    // PostgreSQL refused a value that passed the door (SQLSTATE class 22, data exception).
    // The door (readJson, the schemas) should refuse every such value first, naming it; this
    // is the backstop. Nothing was written: every write and the answer built from it share
    // one transaction (committed.ts).
    const code = (err as { code?: unknown }).code;
    if (typeof code === "string" && code.startsWith("22")) {
      return c.json({ error: "invalid_request", field: "body", message: `PostgreSQL refused a value: ${err.message}` }, 400);
    }
    deps.logger.error({ err, path: c.req.path }, "request failed");
    return c.json({ error: "internal", message: "internal error; see the api log" }, 500);
  });
  return app;
}
