import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import { isUnavailableError } from "@rtb/db";
import type { AppDeps } from "./deps.ts";
import { InvalidRequestError, UnsupportedMediaTypeError, utf8Url } from "./validation.ts";
import { sameOrigin } from "./same-origin.ts";
import { bearerAuth } from "./auth.ts";
import { auditLog } from "./audit.ts";
import { routes, serve } from "./routes.ts";
import { controlRoutes } from "./control-routes.ts";
import { unitRoutes } from "./unit-routes.ts";
import { groupRoutes } from "./group-routes.ts";
import { scheduleRoutes } from "./schedule-routes.ts";
import { workflowRoutes } from "./workflow-routes.ts";
import { healthRoutes } from "./health-routes.ts";
import { metricsRoutes } from "./metrics-routes.ts";
import { metaRoutes } from "./meta-routes.ts";
import { asyncApiRoutes } from "./asyncapi-routes.ts";
import { dashboardRoutes } from "./dashboard.ts";
import { openApiDocument } from "./openapi-document.ts";

/** The HTTP surface: one sub-app per resource, one error handler, JSON everywhere. */
export function createApp(deps: AppDeps): OpenAPIHono {
  const app = routes();
  // Who did what: first, so refused attempts are logged too.
  app.use(auditLog(deps.logger));
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
  app.route("/", controlRoutes(deps));
  app.route("/units", unitRoutes(deps));
  app.route("/groups", groupRoutes(deps));
  app.route("/schedules", scheduleRoutes(deps));
  app.route("/workflows", workflowRoutes(deps));
  app.route("/", healthRoutes(deps));
  app.route("/", metricsRoutes(deps));
  app.route("/", metaRoutes(deps.settings));
  app.route("/", asyncApiRoutes(deps.broker.topology, deps.settings));
  app.route("/", dashboardRoutes(deps));

  const document = createRoute({
    method: "get",
    path: "/openapi.json",
    tags: ["meta"],
    summary: "This document: OpenAPI 3.1, generated from the route declarations and the schemas that validate requests",
    responses: { 200: { description: "The OpenAPI document." } },
  });
  // Built on first use, when every route (this one too) is registered.
  let cached: object | undefined;
  serve(app, document, (c) => c.json((cached ??= openApiDocument(app, deps.auth))));

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
