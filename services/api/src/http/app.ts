import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { isUnavailableError, type Db } from "@rtb/db";
import type { Broker, Logger } from "@rtb/runtime";
import type { Dispatcher } from "../dispatcher.ts";
import type { ApiStats } from "../stats.ts";
import { InvalidRequestError } from "./validation.ts";
import { controlRoutes } from "./control-routes.ts";
import { unitRoutes } from "./unit-routes.ts";
import { healthRoutes } from "./health-routes.ts";
import { bearerAuth, type AuthOptions } from "./auth.ts";
import { dashboardRoutes } from "./dashboard.ts";

export interface AppDeps {
  auth: AuthOptions;
  db: Db;
  broker: Broker;
  dispatcher: Dispatcher;
  stats: ApiStats;
  logger: Logger;
  maxQueue: number;
  /** Aborted when the api starts stopping: long-lived responses (GET /events) end then. */
  closing: AbortSignal;
}

/** The HTTP surface: one sub-app per resource, one error handler, JSON everywhere. */
export function createApp(deps: AppDeps): Hono {
  const app = new Hono();
  app.use(bearerAuth(deps.auth));
  app.route("/", controlRoutes(deps));
  app.route("/units", unitRoutes(deps));
  app.route("/", healthRoutes(deps));
  app.route("/", dashboardRoutes(deps));

  app.notFound((c) => c.json({ error: "not_found", message: `no route for ${c.req.method} ${c.req.path}` }, 404));
  app.onError((err, c) => {
    if (err instanceof InvalidRequestError) {
      return c.json({ error: "invalid_request", field: err.field, message: err.message }, 400);
    }
    if (err instanceof HTTPException) return c.json({ error: "http_error", message: err.message }, err.status);
    if (isUnavailableError(err)) {
      deps.logger.warn({ err: err.message, path: c.req.path }, "request failed: PostgreSQL unavailable");
      c.header("Retry-After", "5");
      return c.json({ error: "database_unavailable", message: `PostgreSQL is not reachable (${err.message}); retry shortly` }, 503);
    }
    deps.logger.error({ err, path: c.req.path }, "request failed");
    return c.json({ error: "internal", message: "internal error; see the api log" }, 500);
  });
  return app;
}
