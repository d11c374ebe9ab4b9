import { Hono } from "hono";
import { z } from "zod";
import { getUnit } from "@rtb/db";
import type { AppDeps } from "./app.ts";
import { intParam, valid } from "./validation.ts";

const idParam = z.object({ id: intParam({ min: 1, max: Number.MAX_SAFE_INTEGER }) });

/** GET /units/:id: the unit and its timeline. */
export function unitRoutes({ db }: AppDeps): Hono {
  const app = new Hono();
  app.get("/:id", valid("param", idParam), async (c) => {
    const { id } = c.req.valid("param");
    const unit = await getUnit(db, id);
    if (!unit) return c.json({ error: "not_found", message: `no unit with id ${id}` }, 404);
    return c.json(unit);
  });
  return app;
}
