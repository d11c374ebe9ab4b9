import { z } from "zod";
import { kindSchema, NAME_MAX_LENGTH } from "../names.ts";
import { UNIT_STATUSES, type UnitStatus } from "../statuses.ts";

/**
 * The fields the api's requests share, as plain zod (the CLI imports them without Hono).
 * Query and path parameters arrive as text, so the number and status fields here parse text.
 */

/**
 * Text PostgreSQL stores as sent: no NUL (text cannot hold one) and no lone surrogate (pg
 * would encode it as U+FFFD, so different values would become one). For strings that arrive
 * outside a JSON body, in a path or query; the api's body reader checks every string of a body.
 */
export const storableText = (schema: z.ZodString) =>
  schema
    .refine((s) => !s.includes("\u0000"), { message: "contains a NUL character (\\u0000), which PostgreSQL cannot store" })
    .refine((s) => !/\p{Cs}/u.test(s), { message: "contains a lone UTF-16 surrogate, which is not Unicode text" });

/**
 * A whole number written in plain decimal digits, within [min, max]. Stricter than
 * z.coerce.number, which would also take "0x10", "1e3" or " 7 ". In the OpenAPI document
 * it is the integer it stands for (the metadata below), not the text that carries it.
 */
export function intParam(opts: { min: number; max: number; defaultValue?: number; cursor?: boolean }) {
  const message = `expected an integer between ${opts.min} and ${opts.max}`;
  // A cursor is documented as the text it is, typed as the `nextCursor` it comes from.
  const documented = opts.cursor
    ? { type: "string", pattern: CURSOR_PATTERN.source }
    : { type: "integer", minimum: opts.min, maximum: opts.max, ...(opts.defaultValue === undefined ? {} : { default: opts.defaultValue }) };
  const schema = z
    .string()
    .regex(/^-?\d+$/, { message })
    .transform(Number)
    .pipe(z.number().int().min(opts.min, { message }).max(opts.max, { message }));
  return opts.defaultValue === undefined ? schema.meta(documented) : schema.optional().transform((v) => v ?? opts.defaultValue!).meta(documented);
}

/** A unit page's cursor (`nextCursor`, `after`): a unit id in decimal. */
export const CURSOR_PATTERN = /^[1-9][0-9]*$/;

export const unitKind = kindSchema.describe("What the unit is; agents consume by kind.");
export const groupName = storableText(z.string().min(1).max(NAME_MAX_LENGTH)).describe("Who the unit is for (a customer, a tenant): dispatch shares fairly across groups.");
export const unitRef = storableText(z.string().min(1).max(NAME_MAX_LENGTH));

/** `status=error,cancelled`: one or more statuses, comma-separated. */
export const statusList = z
  .string()
  .transform((v, ctx) => {
    const wanted = v.split(",").map((s) => s.trim()).filter(Boolean);
    const unknown = wanted.filter((s) => !(UNIT_STATUSES as readonly string[]).includes(s));
    if (unknown.length > 0 || wanted.length === 0) {
      ctx.addIssue({ code: "custom", message: `unknown status '${unknown[0] ?? v}'; expected one or more of ${UNIT_STATUSES.join(", ")}, comma-separated` });
      return z.NEVER;
    }
    return wanted as UnitStatus[];
  })
  .describe(`Comma-separated: ${UNIT_STATUSES.join(", ")}.`);
