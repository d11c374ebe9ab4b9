import { Hono } from "hono";
import { ping } from "@rtb/db";
import type { AppDeps } from "./app.ts";

/** /healthz: the process is alive. /readyz: PostgreSQL and RabbitMQ both answer. */
export function healthRoutes({ db, broker }: AppDeps): Hono {
  const app = new Hono();
  app.get("/healthz", (c) => c.json({ ok: true }));
  app.get("/readyz", async (c) => {
    const database = await ping(db);
    const ready = database && broker.connected;
    return c.json({ ready, database, broker: broker.connected }, ready ? 200 : 503);
  });
  return app;
}
