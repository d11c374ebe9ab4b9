import { Hono, type Context } from "hono";
import { nextInLine, setDispatching, summarize } from "@rtb/db";
import type { AppDeps } from "./app.ts";
import { valid } from "./validation.ts";
import { committed } from "./committed.ts";
import type { ApiDocs } from "./openapi.ts";
import { errorBody, goResult, nextQuery, nextResult, pauseResult, stateView } from "./schemas.ts";
import { dashboardPage, prefersHtml } from "./dashboard.ts";
import { stateSnapshot } from "./state.ts";

const tags = ["control"];

/** GET / (the state of things), GET /next (the backlog in dispatch order), /go (start). */
export function controlRoutes(deps: AppDeps, docs: ApiDocs): Hono {
  const { db, dispatcher, logger } = deps;
  const app = new Hono();

  docs.add({
    method: "get",
    path: "/",
    tags,
    auth: "read",
    summary: "The state of things (JSON); a browser (Accept: text/html) gets the live dashboard",
    responses: { 200: { description: "Counts, flow control, leader, services seen, dead letters, counters.", schema: stateView } },
  });
  app.get("/", async (c) => {
    if (prefersHtml(c)) return dashboardPage(c);
    return c.json(await stateSnapshot(deps));
  });

  docs.add({
    method: "get",
    path: "/next",
    tags,
    auth: "read",
    summary: "The backlog in dispatch order: exactly what the next top-ups will take",
    query: nextQuery,
    responses: { 200: { description: "The next units, in order.", schema: nextResult }, 400: { description: "A bad limit.", schema: errorBody } },
  });
  app.get("/next", valid("query", nextQuery), async (c) => {
    const { limit } = c.req.valid("query");
    const units = await nextInLine(db, limit);
    return c.json({ limit, units });
  });

  const go = async (c: Context) => {
    // Hono answers HEAD with the GET handler; a HEAD (a link checker, `curl -I`) must not start anything.
    if (c.req.method === "HEAD") return c.json({ error: "method_not_allowed", message: "use GET or POST /go" }, 405);
    const state = await setDispatching(db, true);
    if (state.changed) logger.info("dispatching turned on (GET /go)");
    const dispatchedNow = await dispatcher.topUp();
    return c.json({
      dispatching: true,
      changed: state.changed,
      since: state.since,
      dispatchedNow,
      message: state.changed ? "dispatching is on" : "dispatching was already on",
    });
  };
  for (const method of ["get", "post"] as const) {
    docs.add({
      method,
      path: "/go",
      tags,
      auth: "change",
      summary: "Start dispatching (GET too, for browsers and curl); the state is shared by api replicas and survives restarts",
      responses: { 200: { description: "Dispatching is on; a top-up ran.", schema: goResult } },
    });
  }
  app.on(["GET", "POST"], ["/go", "/go/"], go);

  // Stop dispatching: units in flight finish, nothing new goes out. POST only: a paused
  // system is an operator's decision, not something a link checker should make.
  docs.add({
    method: "post",
    path: "/pause",
    tags,
    auth: "change",
    summary: "Stop dispatching: units in flight finish, nothing new goes out",
    responses: { 200: { description: "Dispatching is off.", schema: pauseResult } },
  });
  app.on("POST", ["/pause", "/pause/"], async (c) => {
    let changed = false;
    const res = await committed(db, async (tx) => {
      const state = await setDispatching(tx, false);
      changed = state.changed;
      const summary = await summarize(tx);
      return c.json({
        dispatching: false,
        changed: state.changed,
        since: state.since,
        inFlight: summary.outstanding + summary.counts.processing,
        message: state.changed ? "dispatching is paused; units in flight will finish" : "dispatching was already paused",
      });
    });
    if (changed) logger.info("dispatching paused (POST /pause)");
    return res;
  });
  app.on(["GET", "HEAD"], ["/pause", "/pause/"], (c) => c.json({ error: "method_not_allowed", message: "use POST /pause" }, 405));

  return app;
}
