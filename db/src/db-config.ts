import type { z } from "zod";
import { bool, hostPort, int, secret, text } from "@rtb/runtime";

/** The database variables (only the api and the db CLI touch PostgreSQL). */
export const dbConfig = {
  RTB_DB_HOST: hostPort("localhost:5432", 5432),
  RTB_DB_USER: text("postgres"),
  RTB_DB_PASSWORD: secret(text("")),
  RTB_DB_NAME: text("rtb"),
  RTB_DB_POOL_SIZE: int(10, { min: 1, max: 1000 }),
  /**
   * false: the dispatch statements are sent unnamed (parsed and planned on every call), for a
   * pooler that hands each transaction to any server connection (PgBouncer before 1.21 in
   * transaction mode), where a statement prepared on one connection is unknown on the next.
   */
  RTB_DB_PREPARED_STATEMENTS: bool(true),
} satisfies z.ZodRawShape;

export type DbConfig = { [K in keyof typeof dbConfig]: z.output<(typeof dbConfig)[K]> };
