import { validator } from "hono/validator";
import type { ValidationTargets } from "hono";
import type { z } from "zod";

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
