import { createRoute, type OpenAPIHono } from "@hono/zod-openapi";
import type { Context } from "hono";
import { z } from "zod";
import { createSchedule, deleteSchedule, findSchedule, listSchedules, occurrencesAfter, replaceSchedule, ScheduleTimeError, setSchedulePaused, type Schedule } from "@rtb/db";
import { errorBody, listSchedulesQuery, scheduleParam, schedulePage, scheduleSchemas, scheduleView, type ScheduleView } from "@rtb/protocol";
import type { AppDeps } from "./deps.ts";
import { CHANGE, json, routes, serve } from "./routes.ts";
import { committed } from "./committed.ts";
import { payloadTooLarge } from "./payload-limit.ts";

const tags = ["schedules"];
const invalid = { description: "A field is invalid (a cron expression or time zone this api cannot read, say): `field` names it. Nothing was written.", content: json(errorBody) };
const notFound = { description: "No schedule with this name.", content: json(errorBody) };
const one = { description: "The schedule as it is now.", content: json(scheduleView) };

/** The next occurrences listed in a schedule's view. */
const NEXT_FIRE_TIMES = 5;

/**
 * /schedules: a unit enqueued at each occurrence of a cron expression (db/src/schedules.ts).
 * Every change re-arms this api's scheduler at once; other replicas see it on their next
 * reconciler tick.
 */
export function scheduleRoutes({ db, scheduler, settings }: AppDeps): OpenAPIHono {
  const { create, replace } = scheduleSchemas(settings);
  const app = routes();
  // The cron expression and the zone are read by the parser that fires them, at the door, so
  // a schedule that could never fire is a 400 naming the field, before anything is written.
  const readable = <S extends z.ZodType<{ cron: string; timeZone: string }>>(schema: S) =>
    schema.superRefine((s, ctx) => {
      try {
        occurrencesAfter(s.cron, s.timeZone, new Date(), 1);
      } catch (err) {
        if (!(err instanceof ScheduleTimeError)) throw err;
        ctx.addIssue({ code: "custom", path: [err.field], message: err.message });
      }
    });
  const createChecked = readable(create);
  const replaceChecked = readable(replace);
  const tooLarge = (c: Context, payload: unknown) => {
    const refused = payloadTooLarge([payload], settings.maxPayloadBytes, () => "unit.payload");
    return refused && c.json(refused, 413);
  };
  const tooLargeResponse = { description: `The unit's payload JSON is larger than ${settings.maxPayloadBytes} bytes, the most one broker message can carry (field \`unit.payload\`, with \`limit\`).`, content: json(errorBody) };
  const changed = (why: string) => void scheduler.refresh(why);

  const post = createRoute({
    method: "post",
    path: "/",
    tags,
    security: CHANGE,
    summary: "Create a schedule: a unit enqueued at each occurrence of a cron expression, in a time zone",
    description:
      "Its first occurrence is the first after the database's now. Each occurrence enqueues exactly one unit, whatever the number of api replicas, " +
      "its ref being `schedule:<name>@<occurrence>`. Occurrences later than RTB_SCHEDULE_GRACE_MS (the api down, the schedule paused) are missed: `missed` decides.",
    request: { body: { required: true, content: json(create) } },
    responses: {
      201: { description: "Created.", content: json(scheduleView) },
      400: invalid,
      409: { description: "A schedule with this name exists (PUT /schedules/{name} changes it).", content: json(errorBody) },
      413: tooLargeResponse,
      415: { description: "The body is not application/json (UTF-8).", content: json(errorBody) },
    },
  });
  serve(
    app,
    post,
    async (c) => {
      const body = c.req.valid("json");
      const refused = tooLarge(c, body.unit.payload);
      if (refused) return refused;
      const res = await committed(db, async (tx) => {
        const schedule = await createSchedule(tx, body.name, body);
        if (!schedule) return c.json({ error: "conflict", field: "name", message: `a schedule named ${body.name} exists; PUT /schedules/${body.name} changes it` }, 409);
        return c.json(view(schedule), 201);
      });
      if (res.status === 201) changed("schedule created");
      return res;
    },
    { bodySchema: () => createChecked },
  );

  const list = createRoute({
    method: "get",
    path: "/",
    tags,
    summary: "Schedules by name, with their next occurrences, paused state and last occurrence fired",
    request: { query: listSchedulesQuery },
    responses: { 200: { description: "A page of schedules.", content: json(schedulePage) }, 400: invalid },
  });
  serve(app, list, async (c) => {
    const q = c.req.valid("query");
    const page = await listSchedules(db, { limit: q.limit, ...(q.after !== undefined ? { after: q.after } : {}) });
    return c.json({ schedules: page.schedules.map(view), nextCursor: page.nextAfter }, 200);
  });

  const show = createRoute({
    method: "get",
    path: "/{name}",
    tags,
    summary: "One schedule",
    request: { params: scheduleParam },
    responses: { 200: one, 400: invalid, 404: notFound },
  });
  serve(app, show, async (c) => {
    const { name } = c.req.valid("param");
    const schedule = await findSchedule(db, name);
    return schedule ? c.json(view(schedule), 200) : unknown(c, name);
  });

  const put = createRoute({
    method: "put",
    path: "/{name}",
    tags,
    security: CHANGE,
    summary: "Change a schedule: its whole definition (paused, when left out, stays as it is)",
    description: "A changed cron expression or time zone starts from the first occurrence after now; the units already made, the last occurrence fired and the counts stay.",
    request: { params: scheduleParam, body: { required: true, content: json(replace) } },
    responses: { 200: one, 400: invalid, 404: notFound, 413: tooLargeResponse, 415: { description: "The body is not application/json (UTF-8).", content: json(errorBody) } },
  });
  serve(
    app,
    put,
    async (c) => {
      const { name } = c.req.valid("param");
      const body = c.req.valid("json");
      const refused = tooLarge(c, body.unit.payload);
      if (refused) return refused;
      const res = await committed(db, async (tx) => {
        const schedule = await replaceSchedule(tx, name, body);
        return schedule ? c.json(view(schedule), 200) : unknown(c, name);
      });
      if (res.status === 200) changed("schedule changed");
      return res;
    },
    { bodySchema: () => replaceChecked },
  );

  const remove = createRoute({
    method: "delete",
    path: "/{name}",
    tags,
    security: CHANGE,
    summary: "Delete a schedule; the units it made stay",
    request: { params: scheduleParam },
    responses: { 200: { description: "The schedule as it was.", content: json(scheduleView) }, 400: invalid, 404: notFound },
  });
  serve(app, remove, async (c) => {
    const { name } = c.req.valid("param");
    const schedule = await deleteSchedule(db, name);
    if (!schedule) return unknown(c, name);
    changed("schedule deleted");
    return c.json(view(schedule), 200);
  });

  const pausing = (verb: "pause" | "resume", summary: string) => {
    const route = createRoute({
      method: "post",
      path: `/{name}/${verb}`,
      tags,
      security: CHANGE,
      summary,
      request: { params: scheduleParam },
      responses: { 200: one, 400: invalid, 404: notFound },
    });
    serve(app, route, async (c) => {
      const { name } = c.req.valid("param");
      const schedule = await setSchedulePaused(db, name, verb === "pause");
      if (!schedule) return unknown(c, name);
      changed(`schedule ${verb}d`);
      return c.json(view(schedule), 200);
    });
  };
  pausing("pause", "Pause a schedule: it fires nothing until resumed (pausing a paused one changes nothing)");
  pausing(
    "resume",
    "Resume a schedule. The occurrences the pause covered are missed occurrences: its missed policy decides (skip, the default, runs none of them; once runs one; each:N up to N)",
  );
  return app;
}

const unknown = (c: Context, name: string) => c.json({ error: "not_found", field: "name", message: `no schedule named ${name}` }, 404);

/** The occurrences after next_fire_at; none when they cannot be computed (the next pass pauses such a schedule, saying why). */
function later(s: Schedule): Date[] {
  try {
    return occurrencesAfter(s.cron, s.timeZone, s.nextFireAt, NEXT_FIRE_TIMES - 1);
  } catch {
    return [];
  }
}

/** A schedule as the api answers it: its next occurrences computed from next_fire_at (the database's time). */
function view(s: Schedule): ScheduleView {
  const paused = s.pausedAt !== null;
  const next = paused ? [] : [s.nextFireAt, ...later(s)];
  return {
    name: s.name,
    cron: s.cron,
    timeZone: s.timeZone,
    unit: s.unit,
    missed: s.missed,
    paused,
    pausedAt: s.pausedAt?.toISOString() ?? null,
    nextFireAt: next[0]?.toISOString() ?? null,
    nextFireTimes: next.map((d) => d.toISOString()),
    lastFired: s.lastFired && { occurrence: s.lastFired.occurrence.toISOString(), unitId: s.lastFired.unitId, at: s.lastFired.at.toISOString() },
    fired: s.fired,
    skipped: s.skipped,
    createdAt: s.createdAt.toISOString(),
    updatedAt: s.updatedAt.toISOString(),
  };
}
