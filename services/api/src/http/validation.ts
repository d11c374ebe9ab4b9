import { validator } from "hono/validator";
import type { Context, ValidationTargets } from "hono";
import { z } from "zod";

/** A request that does not match its schema: 400, naming the field and the reason. */
export class InvalidRequestError extends Error {
  override name = "InvalidRequestError";
  readonly field: string;
  constructor(field: string, message: string) {
    super(message);
    this.field = field;
  }
}

/** Hono validator middleware over a zod schema; handlers see only valid, typed input. */
export function valid<T extends keyof ValidationTargets, S extends z.ZodType>(target: T, schema: S) {
  return validator(target, (value): z.output<S> => check(schema, value, target));
}

/**
 * The request's body parsed as JSON: malformed JSON or a missing body is an
 * InvalidRequestError naming `body`. The size limit is enforced before this, by bodyLimit in
 * app.ts. Validate the value with `parsed`.
 */
export async function readJson(c: Context, opts: { whenEmpty?: unknown } = {}): Promise<unknown> {
  const text = await c.req.text();
  if (text.trim() === "") {
    if (opts.whenEmpty === undefined) throw new InvalidRequestError("body", "expected a JSON body");
    return opts.whenEmpty;
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new InvalidRequestError("body", `malformed JSON: ${(err as Error).message}`);
  }
}

/** `value` checked against `schema`; the first issue is an InvalidRequestError naming its field (`[3].kind`). */
export const parsed = <S extends z.ZodType>(schema: S, value: unknown): z.output<S> => check(schema, value, "body");

function check<S extends z.ZodType>(schema: S, value: unknown, whole: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  if (!issue) throw new InvalidRequestError(whole, "invalid");
  const path = issue.code === "unrecognized_keys" ? [...issue.path, issue.keys[0]!] : issue.path;
  const message = issue.code === "unrecognized_keys" ? `unknown field (${issue.message})` : issue.message;
  throw new InvalidRequestError(fieldName(path) || whole, message);
}

/** ["units", 3, "kind"] -> "units[3].kind"; [3, "kind"] -> "[3].kind". */
export function fieldName(path: readonly PropertyKey[]): string {
  return path.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join("");
}

/**
 * A whole number written in plain decimal digits, within [min, max]. Stricter than
 * z.coerce.number, which would also take "0x10", "1e3" or " 7 ".
 */
export function intParam(opts: { min: number; max: number; defaultValue?: number }) {
  const message = `expected an integer between ${opts.min} and ${opts.max}`;
  const digits = z.string().regex(/^-?\d+$/, { message });
  // In the OpenAPI document it is the integer it stands for (a query string carries text).
  INTEGER_PARAMS.set(digits, { type: "integer", minimum: opts.min, maximum: opts.max, ...(opts.defaultValue === undefined ? {} : { default: opts.defaultValue }) });
  const schema = digits
    .transform(Number)
    .pipe(z.number().int().min(opts.min, { message }).max(opts.max, { message }));
  return opts.defaultValue === undefined ? schema : schema.optional().transform((v) => v ?? opts.defaultValue!);
}

/** The JSON schema of each intParam's text, for openapi.ts. */
export const INTEGER_PARAMS = new WeakMap<z.ZodType, Record<string, unknown>>();
