import { OpenAPIHono, type RouteConfig, type RouteHandler } from "@hono/zod-openapi";
import type { Handler } from "hono";
import type { z } from "zod";
import { invalidRequest, parsed, readJson } from "./validation.ts";

/**
 * Routes as @hono/zod-openapi declarations: one `createRoute` per operation (method, path,
 * parameter, body and response schemas, security) served with its handler by `serve`, so
 * /openapi.json is generated from what validates and types the requests and answers, and
 * cannot describe a route other than the one served.
 */

/** What the document says a route needs when RTB_API_TOKEN is set (auth.ts enforces it). */
export const CHANGE = [{ bearer: [] }];
/** Never needs the token (health probes). Reads leave `security` out: they need it only with RTB_API_TOKEN_READS. */
export const OPEN = [];

/** A route's JSON content (a body or an answer) of this schema. */
export const json = <S extends z.ZodType>(schema: S) => ({ "application/json": { schema } });

/** A sub-app whose query and path failures are the api's 400 naming the parameter (`limit`, `id`). */
export const routes = () =>
  new OpenAPIHono({
    defaultHook: (result) => {
      if (!result.success) throw invalidRequest(result.error, result.target);
    },
  });

/**
 * Serve `route` with `handler`. Query and path parameters are validated by zod-openapi's
 * validators (through the hook above). A JSON body is not: their validator reads it with
 * c.req.json(), which decodes invalid UTF-8 with replacement (docs/architecture.md, Input
 * validation) and answers a wrong Content-Type in its own words. So the route is registered
 * in the document as declared, body included, and served without its body; the body is read
 * by readJson and validated against the declared schema here, after the parameters, and
 * handed to the handler as `c.req.valid("json")`, typed by the declaration.
 *
 * `bodySchema` picks the schema by the value's shape where the declared one is a union
 * (POST /units: one unit or an array), so that an error names the field (`[3].kind`); a
 * union's error could not say which.
 */
export function serve<R extends RouteConfig>(app: OpenAPIHono, route: R, handler: RouteHandler<R>, opts: { bodySchema?: (value: unknown) => z.ZodType } = {}): void {
  const { body, ...request } = route.request ?? {};
  app.openAPIRegistry.registerPath(route);
  const media = body?.content["application/json"];
  const declared = media && "schema" in media ? (media.schema as z.ZodType) : undefined;
  // The handler's types come from `route` at the call site; below, it is served as a plain
  // handler (TypeScript cannot relate `openapi`'s computed types for an unknown R).
  const typed = handler as unknown as Handler;
  const served: Handler = !declared
    ? typed
    : async (c, next) => {
        const value = await readJson(c, body?.required ? {} : { whenEmpty: {} });
        c.req.addValidatedData("json", parsed(opts.bodySchema?.(value) ?? declared, value) as object);
        return typed(c, next);
      };
  (app.openapi as (route: RouteConfig, handler: Handler) => unknown)({ ...route, request, hide: true }, served);
}
