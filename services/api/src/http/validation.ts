import { validator } from "hono/validator";
import type { ValidationTargets } from "hono";
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
  return validator(target, (value): z.output<S> => {
    const result = schema.safeParse(value);
    if (result.success) return result.data;
    const issue = result.error.issues[0];
    throw new InvalidRequestError(issue?.path.join(".") || target, issue?.message ?? "invalid");
  });
}

/**
 * A whole number written in plain decimal digits, within [min, max]. Stricter than
 * z.coerce.number, which would also take "0x10", "1e3" or " 7 ".
 */
export function intParam(opts: { min: number; max: number; defaultValue?: number }) {
  const message = `expected an integer between ${opts.min} and ${opts.max}`;
  const schema = z
    .string()
    .regex(/^-?\d+$/, { message })
    .transform(Number)
    .pipe(z.number().int().min(opts.min, { message }).max(opts.max, { message }));
  return opts.defaultValue === undefined ? schema : schema.optional().transform((v) => v ?? opts.defaultValue!);
}
