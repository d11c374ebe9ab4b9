import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import { cancelMatching, cancelUnit } from "@rtb/db";
import { CANCELLABLE, cancelBody, cancelResult, conflictBody, errorBody, idParam, unitActionResult } from "@rtb/protocol";
import type { AppDeps } from "./deps.ts";
import { CHANGE, json, serve } from "./routes.ts";
import { callerOf } from "./audit.ts";

const tags = ["units"];
const cancellable = CANCELLABLE.join(", ");
const invalid = { description: "A field is invalid: `field` names it, `message` says why. Nothing was written.", content: json(errorBody) };

/**
 * Cancelling on /units, one unit or every unit matching a filter, in any status that is not
 * terminal (db/src/cancel.ts). The cancel is committed first; then the agents are told
 * (the control exchange: cancel-announcer.ts), so that a handler running the attempt is
 * aborted and a job still waiting for an agent is dropped. A cancel of units in flight frees
 * room in the outbox and in their groups: a top-up follows.
 */
export function cancelRoutes(app: OpenAPIHono, deps: AppDeps): void {
  const { db, dispatcher, cancels } = deps;

  const many = createRoute({
    method: "post",
    path: "/cancel",
    tags,
    security: CHANGE,
    summary: "Cancel every unit of a kind, a group and/or a status (stop everything of this customer)",
    description:
      `Every unit that matches all the filters given and is ${cancellable} when the request arrives is cancelled, ` +
      "in batches of 1,000 units, each its own short transaction (so a large cancel holds no lock for long; a request that fails midway " +
      "has cancelled the batches before, and can simply be sent again). Units in flight are announced to the agents: " +
      "their handlers are aborted, their jobs dropped. Each unit's timeline records the cancel and who asked.",
    request: { body: { required: true, content: json(cancelBody) } },
    responses: { 200: { description: "How many units were cancelled.", content: json(cancelResult) }, 400: invalid, 415: { description: "The body is not application/json (UTF-8).", content: json(errorBody) } },
  });
  serve(app, many, async (c) => {
    const f = c.req.valid("json");
    const statuses = f.status === undefined ? undefined : typeof f.status === "string" ? [f.status] : f.status;
    const totals = await cancelMatching(db, { kind: f.kind, group: f.group, statuses }, callerOf(c), {
      // Told batch by batch, so agents stop the first units while the next batch is cancelled.
      onBatch: async (units) => void (await cancels.announce(units, "bulk cancel")),
    });
    // Room freed in flight, or a dependent whose ignore edge a cancel satisfied made ready.
    if (totals.cancelled > 0) dispatcher.trigger("units cancelled");
    return c.json(totals, 200);
  });

  const one = createRoute({
    method: "post",
    path: "/{id}/cancel",
    tags,
    security: CHANGE,
    summary: `Cancel a unit that is not finished (${cancellable})`,
    description:
      "A pending unit is never dispatched. A unit in flight ends its attempt as cancelled: the agents are told, so its handler's " +
      "abort signal fires (or its job is dropped before it runs), and any later report of that attempt is ignored. Retry brings it back.",
    request: { params: idParam },
    responses: {
      200: { description: "Done; the unit as it is now.", content: json(unitActionResult) },
      400: invalid,
      404: { description: "No unit with this id.", content: json(errorBody) },
      409: { description: "The unit is finished (success, error or cancelled); `unit` shows it as it is.", content: json(conflictBody) },
    },
  });
  serve(app, one, async (c) => {
    const { id } = c.req.valid("param");
    const result = await cancelUnit(db, id, callerOf(c));
    if (result.outcome === "not_found") return c.json({ error: "not_found", field: "id", message: `no unit with id ${id}` }, 404);
    if (result.outcome === "conflict") {
      return c.json({ error: "conflict", field: "status", message: `unit ${id} is ${result.unit.status}; only ${cancellable} units can be cancelled`, unit: result.unit }, 409);
    }
    if (result.inFlight) await cancels.announce([result.inFlight], "cancel");
    dispatcher.trigger("unit cancelled");
    return c.json({ unit: result.unit }, 200);
  });
}
