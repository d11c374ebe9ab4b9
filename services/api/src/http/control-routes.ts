import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import type { Context } from "hono";
import { z } from "zod";
import { nextInLine, setDispatching, summarize } from "@rtb/db";
import { errorBody, goResult, nextQuery, nextResult, pauseResult, stateView } from "@rtb/protocol";
import type { AppDeps } from "./deps.ts";
import { committed } from "./committed.ts";
import { CHANGE, json, routes, serve } from "./routes.ts";
import { dashboardPage, prefersHtml } from "./dashboard.ts";
import { stateSnapshot } from "./state.ts";

const tags = ["control"];

/** GET / (the state of things), GET /next (the backlog in dispatch order), /go (start), /pause (stop). */
export function controlRoutes(deps: AppDeps): OpenAPIHono {
  const { db, dispatcher, logger } = deps;
  const app = routes();

  const state = createRoute({
    method: "get",
    path: "/",
    tags,
    summary: "The state of things (JSON); a browser (Accept: text/html) gets the live dashboard",
    responses: {
      200: {
        description: "Counts, flow control, leader, services seen, dead letters, counters.",
        content: { ...json(stateView), "text/html": { schema: z.string().describe("The dashboard page.") } },
      },
    },
  });
  serve(app, state, async (c) => {
    if (prefersHtml(c)) return dashboardPage(c);
    return c.json(await stateSnapshot(deps), 200);
  });

  const next = createRoute({
    method: "get",
    path: "/next",
    tags,
    summary: "The backlog in dispatch order: exactly what the next top-ups will take",
    request: { query: nextQuery },
    responses: { 200: { description: "The next units, in order.", content: json(nextResult) }, 400: { description: "A bad limit.", content: json(errorBody) } },
  });
  serve(app, next, async (c) => {
    const { limit } = c.req.valid("query");
    const units = await nextInLine(db, limit);
    return c.json({ limit, units }, 200);
  });

  const go = async (c: Context) => {
    // Hono answers HEAD with the GET handler; a HEAD (a link checker, `curl -I`) must not start anything.
    if (c.req.method === "HEAD") return c.json({ error: "method_not_allowed", message: "use GET or POST /go" }, 405);
    const state = await setDispatching(db, true);
    if (state.changed) logger.info("dispatching turned on (GET /go)");
    const dispatchedNow = await dispatcher.topUp();
    return c.json(
      {
        dispatching: true as const,
        changed: state.changed,
        since: state.since,
        dispatchedNow,
        message: state.changed ? "dispatching is on" : "dispatching was already on",
      },
      200,
    );
  };
  for (const method of ["get", "post"] as const) {
    const route = createRoute({
      method,
      path: "/go",
      tags,
      security: CHANGE,
      summary: "Start dispatching (GET too, for browsers and curl); the state is shared by api replicas and survives restarts",
      responses: { 200: { description: "Dispatching is on; a top-up ran.", content: json(goResult) }, 405: { description: "HEAD: it would start dispatching.", content: json(errorBody) } },
    });
    serve(app, route, go);
  }
  app.on(["GET", "POST"], "/go/", go);

  // Stop dispatching: units in flight finish, nothing new goes out. POST only: a paused
  // system is an operator's decision, not something a link checker should make.
  const pause = createRoute({
    method: "post",
    path: "/pause",
    tags,
    security: CHANGE,
    summary: "Stop dispatching: units in flight finish, nothing new goes out",
    responses: { 200: { description: "Dispatching is off.", content: json(pauseResult) } },
  });
  const paused = async (c: Context) => {
    let changed = false;
    const res = await committed(db, async (tx) => {
      const state = await setDispatching(tx, false);
      changed = state.changed;
      const summary = await summarize(tx);
      return c.json(
        {
          dispatching: false as const,
          changed: state.changed,
          since: state.since,
          inFlight: summary.outstanding + summary.counts.processing,
          message: state.changed ? "dispatching is paused; units in flight will finish" : "dispatching was already paused",
        },
        200,
      );
    });
    if (changed) logger.info("dispatching paused (POST /pause)");
    return res;
  };
  serve(app, pause, paused);
  app.post("/pause/", paused);
  app.on(["GET", "HEAD"], ["/pause", "/pause/"], (c) => c.json({ error: "method_not_allowed", message: "use POST /pause" }, 405));

  return app;
}
