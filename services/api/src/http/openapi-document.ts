import type { OpenAPIHono } from "@hono/zod-openapi";

const VERSION = "0.1.0";

/**
 * /openapi.json: zod-openapi's OpenAPI 3.1 document of every registered route, with the
 * bearer scheme the routes' `security` refers to and an operationId for each operation
 * (get /units/{id}/retry -> getUnitsIdRetry), given here because a sub-app's route does not
 * know the path it is mounted at.
 */
export function openApiDocument(app: OpenAPIHono): object {
  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", {
    type: "http",
    scheme: "bearer",
    description: "RTB_API_TOKEN; required for changes when set, and for reads too with RTB_API_TOKEN_READS=true",
  });
  const document = app.getOpenAPI31Document({
    openapi: "3.1.0",
    info: {
      title: "rtb api",
      version: VERSION,
      description: "rtb tracks every unit's status in PostgreSQL and keeps the broker's outbox topped up to RTB_BROADCAST_MAX_QUEUE. Errors are JSON `{error, field?, message}`.",
    },
  });
  for (const [path, operations] of Object.entries(document.paths ?? {})) {
    for (const [method, operation] of Object.entries(operations)) {
      if (typeof operation === "object" && operation !== null && !("operationId" in operation)) Object.assign(operation, { operationId: operationId(method, path) });
    }
  }
  return document;
}

/** get /units/{id}/retry -> getUnitsIdRetry; get / -> getRoot. */
function operationId(method: string, path: string): string {
  const words = path.split(/[^A-Za-z0-9]+/).filter(Boolean);
  return method + (words.length ? words.map((w) => w[0]!.toUpperCase() + w.slice(1)).join("") : "Root");
}
