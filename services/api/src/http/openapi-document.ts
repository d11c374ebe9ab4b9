import { z, type OpenAPIHono } from "@hono/zod-openapi";
import { zodToOpenAPIRegistry } from "@asteasolutions/zod-to-openapi";
import { callbackPayload, httpComponents } from "@rtb/protocol";
import type { AuthOptions } from "./auth.ts";
import { CHANGE } from "./routes.ts";

/** rtb's version, in the OpenAPI and AsyncAPI documents. */
export const VERSION = "0.1.0";

/**
 * The protocol's shared schemas by name, so the generator writes each once in
 * components.schemas and refers to it with $ref wherever a route uses it. @rtb/protocol is
 * plain zod (the CLI and the dashboard type with it, without Hono); the name is given here,
 * in zod-to-openapi's own registry, which is what its generator reads a schema's refId from.
 * (A zod 4 `.meta({ id })` alone is not: the generator takes a refId only from its registry.)
 */
for (const [name, schema] of Object.entries(httpComponents)) {
  const current = zodToOpenAPIRegistry.get(schema) as { _internal?: object } | undefined;
  zodToOpenAPIRegistry.add(schema, { ...current, _internal: { ...current?._internal, refId: name } });
}

type Operation = { security?: unknown[]; responses?: Record<string, unknown> };

/**
 * /openapi.json: zod-openapi's OpenAPI 3.1 document of every registered route, with the
 * bearer scheme the routes' `security` refers to and an operationId for each operation
 * (get /units/{id}/retry -> getUnitsIdRetry), given here because a sub-app's route does not
 * know the path it is mounted at. What every route shares is added here too:
 * - `security` on reads: the token when RTB_API_TOKEN_READS is on, none otherwise (the
 *   health probes never need it), and a 401 wherever the token is required;
 * - a 400 on every operation: any URL whose path or query is not UTF-8 once
 *   percent-decoded is refused (validation.ts, utf8Url), on every route;
 * - `servers`: the api itself, relative to where this document is served.
 */
export function openApiDocument(app: OpenAPIHono, auth: Pick<AuthOptions, "reads">): object {
  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", {
    type: "http",
    scheme: "bearer",
    description: "RTB_API_TOKEN; required for changes when set, and for reads too with RTB_API_TOKEN_READS=true",
  });
  // What rtb sends, not what it serves: the completion callback (callback-deliverer.ts).
  app.openAPIRegistry.registerWebhook({
    method: "post",
    path: "unitFinished",
    operationId: "unitFinished",
    summary: "A unit ended: its final state, POSTed to its callbackUrl (else its group's), signed as Standard Webhooks sign",
    // rtb authenticates itself to the receiver by the signature, not by a scheme of this document.
    security: [],
    request: {
      headers: z.object({
        "webhook-id": z.string().describe("msg_ and 32 random hex digits, drawn per delivery: the same on every retry of one delivery, unique across installations (deduplicate on it)."),
        "webhook-timestamp": z.string().regex(/^\d+$/).describe("This attempt's time, in seconds since the epoch."),
        "webhook-signature": z.string().describe("v1,<base64 HMAC-SHA256 of `<webhook-id>.<webhook-timestamp>.<body>` keyed with RTB_WEBHOOK_SECRET's base64-decoded bytes>."),
      }),
      body: { required: true, content: { "application/json": { schema: callbackPayload } } },
    },
    responses: {
      200: { description: "Any 2xx: delivered, never sent again. Anything else (a redirect too), a timeout or no connection: retried with backoff, up to RTB_WEBHOOK_MAX_ATTEMPTS." },
    },
  });
  const document = app.getOpenAPI31Document({
    openapi: "3.1.0",
    info: {
      title: "rtb api",
      version: VERSION,
      description: "rtb tracks every unit's status in PostgreSQL and keeps the broker's outbox topped up to RTB_BROADCAST_MAX_QUEUE. Errors are JSON `{error, field?, message}`.",
    },
    servers: [{ url: "/", description: "This api (the URL this document was fetched from, without /openapi.json)." }],
  });
  const error = { $ref: "#/components/schemas/Error" };
  for (const [path, operations] of Object.entries(document.paths ?? {})) {
    for (const [method, value] of Object.entries(operations)) {
      if (typeof value !== "object" || value === null || !("responses" in value)) continue;
      const operation = value as Operation;
      if (!("operationId" in operation)) Object.assign(operation, { operationId: operationId(method, path) });
      // Reads leave `security` out in their declarations (routes.ts): it depends on this setting.
      operation.security ??= auth.reads ? CHANGE : [];
      const responses = (operation.responses ??= {});
      responses["400"] ??= { description: "The path or a query parameter is not UTF-8 once percent-decoded (`field` names it).", content: { "application/json": { schema: error } } };
      if (operation.security.length > 0) {
        responses["401"] ??= { description: "RTB_API_TOKEN is set and the request has no matching `Authorization: Bearer` header.", content: { "application/json": { schema: error } } };
      }
    }
  }
  return document;
}

/** get /units/{id}/retry -> getUnitsIdRetry; get / -> getRoot. */
function operationId(method: string, path: string): string {
  const words = path.split(/[^A-Za-z0-9]+/).filter(Boolean);
  return method + (words.length ? words.map((w) => w[0]!.toUpperCase() + w.slice(1)).join("") : "Root");
}
