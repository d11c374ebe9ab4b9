import { z } from "zod";
import { oneOf } from "./config.ts";

/** The logging variables every service reads. */
export const logConfig = {
  RTB_LOG_LEVEL: oneOf(["fatal", "error", "warn", "info", "debug", "trace", "silent"], "info"),
  RTB_LOG_FORMAT: oneOf(["auto", "json", "pretty"], "auto"),
} satisfies z.ZodRawShape;
