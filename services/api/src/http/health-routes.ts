import { Hono } from "hono";
import { ping } from "@rtb/db";
import { z } from "zod";
import type { AppDeps } from "./app.ts";
import type { ApiDocs } from "./openapi.ts";

/** An inbox held this long (a database outage ping does not see: read-only, disk full) is not ready. */
const INBOX_STALLED_MS = 5_000;

/** /healthz: the process is alive. /readyz: PostgreSQL and RabbitMQ both answer, and the inbox makes progress. */
export function healthRoutes({ db, broker, inboxFailingForMs }: AppDeps, docs: ApiDocs): Hono {
  const app = new Hono();
  const tags = ["health"];
  docs.add({ method: "get", path: "/healthz", tags, auth: "open", summary: "Liveness: the process answers", responses: { 200: { description: "Alive.", schema: z.object({ ok: z.literal(true) }) } } });
  const readiness = z.object({ ready: z.boolean(), database: z.boolean(), broker: z.boolean(), inbox: z.boolean() });
  docs.add({
    method: "get",
    path: "/readyz",
    tags,
    auth: "open",
    summary: "Readiness: PostgreSQL and RabbitMQ both answer, and the inbox is not held",
    responses: { 200: { description: "Ready.", schema: readiness }, 503: { description: "Not ready; says which.", schema: readiness } },
  });
  app.get("/healthz", (c) => c.json({ ok: true }));
  app.get("/readyz", async (c) => {
    const database = await ping(db);
    const inbox = (inboxFailingForMs?.() ?? 0) < INBOX_STALLED_MS;
    const ready = database && broker.connected && inbox;
    return c.json({ ready, database, broker: broker.connected, inbox }, ready ? 200 : 503);
  });
  return app;
}
