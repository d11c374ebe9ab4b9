import { sql } from "kysely";
import type { Db } from "./database.ts";

export interface DispatchSwitch {
  dispatching: boolean;
  /** false when it already was in that state */
  changed: boolean;
  since: Date | null;
}

/** Turn dispatching on or off; idempotent, shared by every api replica, survives restarts. */
export async function setDispatching(db: Db, on: boolean): Promise<DispatchSwitch> {
  const { rows } = await sql<{ dispatching: boolean; changed: boolean; since: Date | null }>`
    WITH before AS (SELECT dispatching FROM control WHERE id FOR UPDATE)
    UPDATE control SET
      dispatching = ${on},
      dispatching_changed_at = CASE WHEN before.dispatching = ${on} THEN dispatching_changed_at ELSE now() END
    FROM before
    WHERE control.id
    RETURNING control.dispatching, before.dispatching <> ${on} AS changed, control.dispatching_changed_at AS since`.execute(db);
  const row = rows[0];
  if (!row) throw new Error("control row missing: run the migrations");
  return { dispatching: row.dispatching, changed: row.changed, since: row.since };
}
