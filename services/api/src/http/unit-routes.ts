import { Hono, type Context } from "hono";
import { jsonBytes } from "@rtb/runtime";
import { cancelUnit, enqueueUnits, findUnit, getUnit, listUnits, redriveErrors, retryUnit, type NewUnit, type UnitAction } from "@rtb/db";
import type { AppDeps } from "./app.ts";
import type { ApiDocs } from "./openapi.ts";
import {
  conflictBody,
  enqueuedBatch,
  enqueuedOne,
  errorBody,
  idParam,
  listUnitsQuery,
  redriveBody,
  redriveResult,
  unitActionResult,
  unitPage,
  unitSchemas,
  unitWithTimeline,
} from "./schemas.ts";
import { parsed, readJson, valid } from "./validation.ts";
import { committed } from "./committed.ts";

const tags = ["units"];
const invalid = { description: "A field is invalid: `field` names it, `message` says why. Nothing was written.", schema: errorBody };
const notFound = { description: "No unit with this id.", schema: errorBody };

/**
 * /units: enqueue (one or a batch, idempotent by ref), list with filters and keyset
 * pagination, one unit with its timeline, and the operator's retry, cancel and redrive.
 */
export function unitRoutes(deps: AppDeps, docs: ApiDocs): Hono {
  const { db, dispatcher, settings } = deps;
  const { newUnit, batch } = unitSchemas(settings);
  const app = new Hono();

  docs.add({
    method: "post",
    path: "/units",
    tags,
    auth: "change",
    summary: "Enqueue one unit, or a batch of them",
    description:
      `The body is one unit, or an array of up to ${settings.maxBatch} (RTB_API_MAX_BATCH) inserted in one round trip to the database, ` +
      `in order. A unit whose ref already exists is returned as it is, never duplicated. Bodies above ${settings.maxBodyBytes} bytes ` +
      "(RTB_API_MAX_BODY_BYTES) are refused with 413. A request with any invalid unit writes nothing.",
    body: { schema: newUnit.or(batch), required: true },
    responses: {
      200: { description: "One unit whose ref already existed: that unit (created: false).", schema: enqueuedOne },
      201: { description: "Created: one unit (`{created, unit}`), or a batch (`{created, existing, units}`).", schema: enqueuedOne.or(enqueuedBatch) },
      400: invalid,
      413: {
        description:
          `The body is larger than RTB_API_MAX_BODY_BYTES (field \`body\`), or a payload's JSON is larger than ${settings.maxPayloadBytes} bytes, ` +
          "the most one broker message can carry (RTB_BROKER_MAX_MESSAGE_BYTES less the envelope; field `payload` or `[i].payload`, with `limit`).",
        schema: errorBody,
      },
      415: { description: "The body is not application/json (UTF-8).", schema: errorBody },
    },
  });
  app.post("/", async (c) => {
    // One schema or the other by shape, so that an error names the unit and the field
    // (`[3].kind`); a union's error could not say which.
    const body = await readJson(c);
    const one = !Array.isArray(body);
    const units = one ? [parsed(newUnit, body)] : parsed(batch, body);
    // A payload that no broker message can carry would be dispatched only to be refused.
    const tooLarge = units.findIndex((u) => jsonBytes(u.payload) > settings.maxPayloadBytes);
    if (tooLarge >= 0) {
      const bytes = jsonBytes(units[tooLarge]!.payload);
      return c.json(
        {
          error: "payload_too_large",
          field: one ? "payload" : `[${tooLarge}].payload`,
          message: `the payload's JSON is ${bytes} bytes; at most ${settings.maxPayloadBytes} fit in one broker message (RTB_BROKER_MAX_MESSAGE_BYTES less the envelope)`,
          limit: settings.maxPayloadBytes,
        },
        413,
      );
    }
    let created = 0;
    const res = await committed(db, async (tx) => {
      const results = await enqueueUnits(tx, units.map(toNewUnit));
      created = results.filter((r) => r.created).length;
      if (one) {
        const unit = await findUnit(tx, results[0]!.id);
        return c.json({ created: results[0]!.created, unit }, results[0]!.created ? 201 : 200);
      }
      return c.json({ created, existing: results.length - created, units: results }, 201);
    });
    if (created > 0) dispatcher.trigger("units enqueued");
    return res;
  });

  docs.add({
    method: "get",
    path: "/units",
    tags,
    auth: "read",
    summary: "List units, newest first, with filters and keyset pagination",
    query: listUnitsQuery,
    responses: { 200: { description: "A page of units.", schema: unitPage }, 400: invalid },
  });
  app.get("/", valid("query", listUnitsQuery), async (c) => {
    const q = c.req.valid("query");
    const page = await listUnits(db, {
      statuses: q.status,
      kind: q.kind,
      group: q.group,
      stuck: q.stuck ? { dispatchTimeoutMs: settings.dispatchTimeoutMs, processingTimeoutMs: settings.processingTimeoutMs } : undefined,
      beforeId: q.after,
      limit: q.limit,
    });
    return c.json({ units: page.units, nextCursor: page.nextBeforeId === null ? null : String(page.nextBeforeId) });
  });

  docs.add({
    method: "post",
    path: "/units/redrive",
    tags,
    auth: "change",
    summary: "Redrive: every errored unit (optionally of one kind or group) back to the backlog",
    description: "Each gets at least one more attempt; the action is recorded in each unit's timeline.",
    body: { schema: redriveBody, required: false },
    responses: { 200: { description: "How many units went back to the backlog.", schema: redriveResult }, 400: invalid },
  });
  app.post("/redrive", async (c) => {
    const filter = parsed(redriveBody, await readJson(c, { whenEmpty: {} }));
    const retried = await redriveErrors(db, filter);
    if (retried > 0) dispatcher.trigger("redrive");
    return c.json({ retried });
  });

  docs.add({
    method: "get",
    path: "/units/:id",
    tags,
    auth: "read",
    summary: "One unit and its timeline",
    params: idParam,
    responses: { 200: { description: "The unit, with every event of every attempt.", schema: unitWithTimeline }, 400: invalid, 404: notFound },
  });
  app.get("/:id", valid("param", idParam), async (c) => {
    const { id } = c.req.valid("param");
    const unit = await getUnit(db, id);
    if (!unit) return unknownUnit(c, id);
    return c.json(unit);
  });

  const action = (verb: "retry" | "cancel", summary: string, allowed: string, run: typeof retryUnit) => {
    docs.add({
      method: "post",
      path: `/units/:id/${verb}`,
      tags,
      auth: "change",
      summary,
      params: idParam,
      responses: {
        200: { description: "Done; the unit as it is now.", schema: unitActionResult },
        400: invalid,
        404: notFound,
        409: { description: `The unit is not ${allowed}; \`unit\` shows it as it is.`, schema: conflictBody },
      },
    });
    app.post(`/:id/${verb}`, valid("param", idParam), async (c) => {
      const { id } = c.req.valid("param");
      const result: UnitAction = await run(db, id);
      if (result.outcome === "not_found") return unknownUnit(c, id);
      if (result.outcome === "conflict") {
        return c.json({ error: "conflict", field: "status", message: `unit ${id} is ${result.unit.status}; only ${allowed} units can be ${verb === "retry" ? "retried" : "cancelled"}`, unit: result.unit }, 409);
      }
      if (verb === "retry") dispatcher.trigger("unit retried");
      return c.json({ unit: result.unit });
    });
  };
  action("retry", "Retry an errored or cancelled unit: back to the backlog, with at least one more attempt", "error or cancelled", retryUnit);
  action("cancel", "Cancel a pending unit (never dispatched, or waiting for its retry)", "pending", cancelUnit);

  return app;
}


const unknownUnit = (c: Context, id: number) => c.json({ error: "not_found", field: "id", message: `no unit with id ${id}` }, 404);

type ParsedUnit = { kind: string; group: string; priority: number; payload: unknown; ref?: string | undefined; maxAttempts: number };
const toNewUnit = (u: ParsedUnit): NewUnit => ({ kind: u.kind, group: u.group, priority: u.priority, payload: u.payload, ref: u.ref ?? null, maxAttempts: u.maxAttempts });
