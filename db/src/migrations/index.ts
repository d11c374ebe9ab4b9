import type { Migration } from "kysely";
import * as m0001 from "./0001_initial.ts";

/** Every migration, in order. Never edit one that has landed: add the next number. */
export const migrations: Record<string, Migration> = {
  "0001_initial": m0001,
};
