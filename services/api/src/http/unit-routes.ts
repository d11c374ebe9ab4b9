import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import type { Context } from "hono";
import { backlogView } from "./state.ts";
import { addDependencies, backlogShape, enqueueUnits, findUnit, getUnit, listUnits, redriveErrors, retryUnit, type Db, type Enqueued, type NewEdge, type NewUnit, type UnitAction } from "@rtb/db";
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
  type ParsedNewUnit,
} from "@rtb/protocol";
import type { AppDeps } from "./deps.ts";
import { CHANGE, json, routes, serve } from "./routes.ts";
import { committed } from "./committed.ts";
import { cancelRoutes } from "./cancel-routes.ts";
import { payloadTooLarge } from "./payload-limit.ts";
import { InvalidRequestError } from "./validation.ts";
import { enqueueSpan, inEnqueueSpan } from "./enqueue-trace.ts";

const tags = ["units"];
const invalid = { description: "A field is invalid: `field` names it, `message` says why. Nothing was written.", content: json(errorBody) };
const notFound = { description: "No unit with this id.", content: json(errorBody) };

/**
 * /units: enqueue (one or a batch, idempotent by ref), list with filters and keyset
 * pagination, one unit with its timeline, and the operator's retry, cancel and redrive.
 */
export function unitRoutes(deps: AppDeps): OpenAPIHono {
  const { db, dispatcher, settings } = deps;
  const { newUnit, batch } = unitSchemas(settings);
  const app = routes();

  const enqueue = createRoute({
    method: "post",
    path: "/",
    tags,
    security: CHANGE,
    summary: "Enqueue one unit, or a batch of them",
    description:
      `The body is one unit, or an array of up to ${settings.maxBatch} (RTB_API_MAX_BATCH) inserted in one round trip to the database, ` +
      `in order. A unit whose ref already exists is returned as it is, never duplicated. Bodies above ${settings.maxBodyBytes} bytes ` +
      "(RTB_API_MAX_BODY_BYTES) are refused with 413. A request with any invalid unit writes nothing. " +
      "A W3C `traceparent` header puts the units in the producer's trace (README \"Traces\"); a malformed one is ignored, never a 400.",
    request: { body: { required: true, content: json(newUnit.or(batch)) } },
    responses: {
      200: { description: "One unit whose ref already existed: that unit (created: false).", content: json(enqueuedOne) },
      201: { description: "Created: one unit (`{created, unit}`), or a batch (`{created, existing, units}`).", content: json(enqueuedOne.or(enqueuedBatch)) },
      400: invalid,
      413: {
        description:
          `The body is larger than RTB_API_MAX_BODY_BYTES (field \`body\`), or a payload's JSON is larger than ${settings.maxPayloadBytes} bytes, ` +
          "the most one broker message can carry (RTB_BROKER_MAX_MESSAGE_BYTES less the envelope; field `payload` or `[i].payload`, with `limit`).",
        content: json(errorBody),
      },
      415: { description: "The body is not application/json (UTF-8).", content: json(errorBody) },
    },
  });
  // One schema or the other by shape, so that an error names the unit and the field.
  const byShape = (value: unknown) => (Array.isArray(value) ? batch : newUnit);
  serve(
    app,
    enqueue,
    async (c) => {
      const body = c.req.valid("json");
      const one = !Array.isArray(body);
      const units = one ? [body] : body;
      const tooLarge = payloadTooLarge(units.map((u) => u.payload), settings.maxPayloadBytes, (i) => (one ? "payload" : `[${i}].payload`));
      if (tooLarge) return c.json(tooLarge, 413);
      let created = 0;
      const span = enqueueSpan(deps.tracing, c, "/units");
      const traceparent = span.traceparent ?? null;
      const res = await inEnqueueSpan(span, () => committed(db, async (tx) => {
        const results = await enqueueUnits(tx, units.map((u) => ({ ...toNewUnit(u), traceparent })));
        created = results.filter((r) => r.created).length;
        span.set({ "rtb.units": units.length, "rtb.units.created": created, ...(one ? { "rtb.unit.id": results[0]!.id } : {}) });
        // Throws (rolling everything back) when a dependency is unknown: a 400 naming it.
        await addDependencies(tx, await resolveDependencies(tx, units, results, one));
        if (one) {
          const unit = (await findUnit(tx, results[0]!.id))!;
          return results[0]!.created ? c.json({ created: true, unit }, 201) : c.json({ created: false, unit }, 200);
        }
        return c.json({ created, existing: results.length - created, units: results }, 201);
      }));
      if (created > 0) dispatcher.trigger("units enqueued");
      return res;
    },
    { bodySchema: byShape },
  );

  const list = createRoute({
    method: "get",
    path: "/",
    tags,
    summary: "List units, newest first, with filters and keyset pagination",
    request: { query: listUnitsQuery },
    responses: { 200: { description: "A page of units.", content: json(unitPage) }, 400: invalid },
  });
  serve(app, list, async (c) => {
    const q = c.req.valid("query");
    const page = await listUnits(db, {
      statuses: q.status,
      kind: q.kind,
      group: q.group,
      ref: q.ref,
      waiting: q.waiting,
      schedule: q.schedule,
      stuck: q.stuck ? { dispatchTimeoutMs: settings.dispatchTimeoutMs, processingTimeoutMs: settings.processingTimeoutMs } : undefined,
      beforeId: q.after,
      limit: q.limit,
    });
    const backlog = backlogView(await backlogShape(db));
    return c.json({ units: page.units, nextCursor: page.nextBeforeId === null ? null : String(page.nextBeforeId), backlog }, 200);
  });

  const redrive = createRoute({
    method: "post",
    path: "/redrive",
    tags,
    security: CHANGE,
    summary: "Redrive: every errored unit (optionally of one kind or group) back to the backlog",
    description: "Each gets at least one more attempt; the action is recorded in each unit's timeline.",
    request: { body: { required: false, content: json(redriveBody) } },
    responses: { 200: { description: "How many units went back to the backlog.", content: json(redriveResult) }, 400: invalid },
  });
  serve(app, redrive, async (c) => {
    const retried = await redriveErrors(db, c.req.valid("json"));
    if (retried > 0) dispatcher.trigger("redrive");
    return c.json({ retried }, 200);
  });

  const show = createRoute({
    method: "get",
    path: "/{id}",
    tags,
    summary: "One unit and its timeline",
    request: { params: idParam },
    responses: { 200: { description: "The unit, with every event of every attempt.", content: json(unitWithTimeline) }, 400: invalid, 404: notFound },
  });
  serve(app, show, async (c) => {
    const { id } = c.req.valid("param");
    const unit = await getUnit(db, id);
    if (!unit) return unknownUnit(c, id);
    return c.json(unit, 200);
  });

  const action = (verb: "retry", summary: string, allowed: string, run: typeof retryUnit) => {
    const route = createRoute({
      method: "post",
      path: `/{id}/${verb}`,
      tags,
      security: CHANGE,
      summary,
      request: { params: idParam },
      responses: {
        200: { description: "Done; the unit as it is now.", content: json(unitActionResult) },
        400: invalid,
        404: notFound,
        409: { description: `The unit is not ${allowed}; \`unit\` shows it as it is.`, content: json(conflictBody) },
      },
    });
    serve(app, route, async (c) => {
      const { id } = c.req.valid("param");
      const result: UnitAction = await run(db, id);
      if (result.outcome === "not_found") return unknownUnit(c, id);
      if (result.outcome === "conflict") {
        return c.json(
          { error: "conflict", field: "status", message: `unit ${id} is ${result.unit.status}; only ${allowed} units can be retried`, unit: result.unit },
          409,
        );
      }
      dispatcher.trigger("unit retried");
      return c.json({ unit: result.unit }, 200);
    });
  };
  action("retry", "Retry an errored or cancelled unit: back to the backlog, with at least one more attempt", "error or cancelled", retryUnit);
  cancelRoutes(app, deps);

  return app;
}

const unknownUnit = (c: Context, id: number) => c.json({ error: "not_found", field: "id", message: `no unit with id ${id}` }, 404);

/**
 * The edges of the units a POST /units created: each dependsOn entry, an id or a ref, names
 * an existing unit or an earlier entry of the same request (so a batch can be a chain, never
 * a cycle). An entry that names nothing throws InvalidRequestError (a 400 naming it), and the
 * request's transaction rolls back. A unit that existed already (its ref) gets no new edges.
 */
async function resolveDependencies(tx: Db, units: readonly ParsedNewUnit[], results: readonly Enqueued[], one: boolean): Promise<NewEdge[]> {
  if (!units.some((u) => u.dependsOn?.length)) return [];
  const ids = units.flatMap((u) => (u.dependsOn ?? []).filter((d): d is number => typeof d === "number"));
  const refs = units.flatMap((u) => (u.dependsOn ?? []).filter((d): d is string => typeof d === "string"));
  const found = await tx
    .selectFrom("units")
    .select(["id", "ref"])
    .where((eb) => eb.or([eb("id", "in", ids.length ? ids : [0]), eb("ref", "in", refs.length ? refs : [""])]))
    .execute();
  const byId = new Set(found.map((r) => r.id));
  const byRef = new Map(found.flatMap((r) => (r.ref === null ? [] : [[r.ref, r.id] as const])));
  // Refs of this request's entries resolve only backwards: to an entry before the one naming them.
  const laterOwn = new Map<string, number>();
  units.forEach((u, i) => u.ref !== undefined && !laterOwn.has(u.ref) && laterOwn.set(u.ref, i));
  const edges: NewEdge[] = [];
  units.forEach((u, i) => {
    if (!u.dependsOn?.length || !results[i]!.created) return;
    u.dependsOn.forEach((d, j) => {
      const field = `${one ? "" : `[${i}].`}dependsOn[${j}]`;
      const own = typeof d === "string" ? laterOwn.get(d) : undefined;
      const target = typeof d === "number" ? (byId.has(d) ? d : undefined) : own !== undefined && own >= i ? undefined : byRef.get(d);
      if (target === undefined) {
        const why = typeof d === "number" ? `no unit with id ${d}` : own !== undefined && own >= i ? `ref "${d}" is this entry or a later one: an entry may depend only on earlier ones` : `no unit with ref "${d}"`;
        throw new InvalidRequestError(field, why);
      }
      if (target === results[i]!.id) throw new InvalidRequestError(field, "a unit cannot depend on itself");
      edges.push({ unitId: results[i]!.id, dependsOn: target, onFailure: u.onFailure ?? "cancel" });
    });
  });
  return edges;
}

const toNewUnit = (u: ParsedNewUnit): NewUnit => ({
  kind: u.kind,
  group: u.group,
  priority: u.priority,
  payload: u.payload,
  ref: u.ref ?? null,
  maxAttempts: u.maxAttempts,
  runAt: u.runAt === undefined ? null : new Date(u.runAt),
  delayMs: u.delayMs ?? null,
  dependencies: u.dependsOn?.length ?? 0,
  callbackUrl: u.callbackUrl ?? null,
});
