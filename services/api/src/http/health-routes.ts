import { Hono } from "hono";
import { ping } from "@rtb/db";
import { z } from "zod";
import type { AppDeps } from "./app.ts";
import type { ApiDocs } from "./openapi.ts";

/** /healthz: the process is alive. /readyz: PostgreSQL and RabbitMQ both answer. */
export function healthRoutes({ db, broker }: AppDeps, docs: ApiDocs): Hono {
  const app = new Hono();
  const tags = ["health"];
  docs.add({ method: "get", path: "/healthz", tags, auth: "open", summary: "Liveness: the process answers", responses: { 200: { description: "Alive.", schema: z.object({ ok: z.literal(true) }) } } });
  const readiness = z.object({ ready: z.boolean(), database: z.boolean(), broker: z.boolean() });
  docs.add({
    method: "get",
    path: "/readyz",
    tags,
    auth: "open",
    summary: "Readiness: PostgreSQL and RabbitMQ both answer",
    responses: { 200: { description: "Ready.", schema: readiness }, 503: { description: "Not ready; says which.", schema: readiness } },
  });
  app.get("/healthz", (c) => c.json({ ok: true }));
  app.get("/readyz", async (c) => {
    const database = await ping(db);
    const ready = database && broker.connected;
    return c.json({ ready, database, broker: broker.connected }, ready ? 200 : 503);
  });
  return app;
}
