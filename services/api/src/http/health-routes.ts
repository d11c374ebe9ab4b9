import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { ping } from "@rtb/db";
import { liveness, readiness } from "@rtb/protocol";
import type { AppDeps } from "./deps.ts";
import { json, OPEN, routes, serve } from "./routes.ts";

/** An inbox held this long (a database outage ping does not see: read-only, disk full) is not ready. */
const INBOX_STALLED_MS = 5_000;

/** /healthz: the process is alive. /readyz: PostgreSQL and RabbitMQ both answer, and the inbox makes progress. */
export function healthRoutes({ db, broker, inboxFailingForMs }: AppDeps): OpenAPIHono {
  const app = routes();
  const tags = ["health"];
  const healthz = createRoute({
    method: "get",
    path: "/healthz",
    tags,
    security: OPEN,
    summary: "Liveness: the process answers",
    responses: { 200: { description: "Alive.", content: json(liveness) } },
  });
  serve(app, healthz, (c) => c.json({ ok: true as const }, 200));

  const readyz = createRoute({
    method: "get",
    path: "/readyz",
    tags,
    security: OPEN,
    summary: "Readiness: PostgreSQL and RabbitMQ both answer, and the inbox is not held",
    responses: { 200: { description: "Ready.", content: json(readiness) }, 503: { description: "Not ready; says which.", content: json(readiness) } },
  });
  serve(app, readyz, async (c) => {
    const database = await ping(db);
    const inbox = (inboxFailingForMs?.() ?? 0) < INBOX_STALLED_MS;
    const ready = database && broker.connected && inbox;
    const body = { ready, database, broker: broker.connected, inbox };
    return ready ? c.json(body, 200) : c.json(body, 503);
  });
  return app;
}
