import type { z } from "zod";
import { hostPort, int, secret, text } from "@rtb/runtime";

/** The database variables (only the api and the db CLI touch PostgreSQL). */
export const dbConfig = {
  RTB_DB_HOST: hostPort("localhost:5432", 5432),
  RTB_DB_USER: text("postgres"),
  RTB_DB_PASSWORD: secret(text("")),
  RTB_DB_NAME: text("rtb"),
  RTB_DB_POOL_SIZE: int(10, { min: 1, max: 1000 }),
} satisfies z.ZodRawShape;

export type DbConfig = { [K in keyof typeof dbConfig]: z.output<(typeof dbConfig)[K]> };
