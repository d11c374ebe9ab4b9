import { z } from "zod";
import { INTEGER_PARAMS } from "./validation.ts";

/**
 * The OpenAPI document, built from the same zod schemas that validate requests: every route
 * registers its operation here with the schemas it validates with, so the document cannot
 * describe a request the api would reject or miss one it accepts. (A test also checks that
 * every route Hono serves is documented.)
 */
export interface Operation {
  method: "get" | "post" | "put" | "head";
  /** Hono style: /units/:id */
  path: string;
  summary: string;
  description?: string;
  tags: string[];
  params?: z.ZodObject;
  query?: z.ZodObject;
  body?: { schema: z.ZodType; required: boolean; description?: string };
  responses: Record<number, { description: string; schema?: z.ZodType; contentType?: string }>;
  /** Needs the bearer token when RTB_API_TOKEN is set: always (a change), or only with RTB_API_TOKEN_READS. */
  auth: "change" | "read" | "open";
}

export class ApiDocs {
  readonly operations: Operation[] = [];

  add(op: Operation): Operation {
    this.operations.push(op);
    return op;
  }

  document(info: { version: string; description: string }): object {
    const paths: Record<string, Record<string, object>> = {};
    for (const op of this.operations) {
      const path = op.path.replace(/:([A-Za-z_]+)/g, "{$1}");
      (paths[path] ??= {})[op.method] = {
        summary: op.summary,
        ...(op.description ? { description: op.description } : {}),
        tags: op.tags,
        operationId: operationId(op.method, op.path),
        parameters: [...parameters(op.params, "path"), ...parameters(op.query, "query")],
        ...(op.body
          ? {
              requestBody: {
                required: op.body.required,
                ...(op.body.description ? { description: op.body.description } : {}),
                content: { "application/json": { schema: jsonSchema(op.body.schema, "input") } },
              },
            }
          : {}),
        responses: Object.fromEntries(
          Object.entries(op.responses).map(([status, r]) => [
            status,
            {
              description: r.description,
              ...(r.schema ? { content: { [r.contentType ?? "application/json"]: { schema: jsonSchema(r.schema, "output") } } } : {}),
            },
          ]),
        ),
        ...(op.auth === "open" ? { security: [] } : op.auth === "change" ? { security: [{ bearer: [] }] } : {}),
      };
    }
    return {
      openapi: "3.1.0",
      info: { title: "rtb api", version: info.version, description: info.description },
      paths,
      components: {
        securitySchemes: {
          bearer: { type: "http", scheme: "bearer", description: "RTB_API_TOKEN; required for changes when set, and for reads too with RTB_API_TOKEN_READS=true" },
        },
      },
    };
  }
}

function parameters(schema: z.ZodObject | undefined, where: "path" | "query"): object[] {
  if (!schema) return [];
  const json = jsonSchema(schema, "input") as { properties?: Record<string, { description?: string }>; required?: string[] };
  return Object.entries(json.properties ?? {}).map(([name, s]) => ({
    name,
    in: where,
    required: where === "path" || (json.required ?? []).includes(name),
    ...(s.description ? { description: s.description } : {}),
    schema: s,
  }));
}

function jsonSchema(schema: z.ZodType, io: "input" | "output"): object {
  const { $schema: _, ...rest } = z.toJSONSchema(schema, {
    io,
    unrepresentable: "any",
    target: "draft-2020-12",
    override: (ctx) => {
      const integer = INTEGER_PARAMS.get(ctx.zodSchema as unknown as z.ZodType);
      if (!integer) return;
      for (const key of Object.keys(ctx.jsonSchema)) if (key !== "description") delete ctx.jsonSchema[key];
      Object.assign(ctx.jsonSchema, integer);
    },
  }) as Record<string, unknown>;
  return rest;
}

/** get /units/:id/retry -> getUnitsIdRetry; get / -> getRoot. */
function operationId(method: string, path: string): string {
  const words = path.split(/[^A-Za-z0-9]+/).filter(Boolean);
  return method + (words.length ? words.map((w) => w[0]!.toUpperCase() + w.slice(1)).join("") : "Root");
}
