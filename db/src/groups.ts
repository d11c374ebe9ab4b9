import { sql } from "kysely";
import type { Db } from "./database.ts";
import { IN_FLIGHT } from "@rtb/protocol";
import { statusList } from "./status-sql.ts";

/** A group as the operator sees it: its share settings and where its units are. */
export interface GroupView {
  name: string;
  weight: number;
  maxInFlight: number | null;
  /** Where its units' ends are POSTed when a unit names no callbackUrl (migration 0013); null: none. */
  callbackUrl: string | null;
  /** Ready units (pending, past any backoff), from the tallies. */
  ready: number;
  /** dispatched + queued + processing */
  inFlight: number;
}

/**
 * Set a group's weight and/or in-flight limit (`maxInFlight: null` removes the limit); a
 * field left out keeps its value. The group need not have any unit yet.
 */
export async function setGroupShare(db: Db, name: string, change: { weight?: number | undefined; maxInFlight?: number | null | undefined; callbackUrl?: string | null | undefined }): Promise<GroupView> {
  await db
    .insertInto("unit_groups")
    .values({ name, last_served: null, weight: change.weight ?? 1, max_in_flight: change.maxInFlight ?? null, callback_url: change.callbackUrl ?? null })
    .onConflict((oc) =>
      oc.column("name").doUpdateSet({
        ...(change.weight !== undefined ? { weight: change.weight } : {}),
        ...(change.maxInFlight !== undefined ? { max_in_flight: change.maxInFlight } : {}),
        ...(change.callbackUrl !== undefined ? { callback_url: change.callbackUrl } : {}),
      }),
    )
    .execute();
  return (await listGroups(db, { names: [name], limit: 1 })).groups[0]!;
}

/**
 * Groups by name (keyset pagination: `after` is the last name of the previous page): those
 * with settings or ever served, and those with ready units.
 */
export async function listGroups(db: Db, opts: { names?: string[]; after?: string; limit: number }): Promise<{ groups: GroupView[]; nextAfter: string | null }> {
  const { rows } = await sql<{ name: string; weight: number; max_in_flight: number | null; callback_url: string | null; ready: string; in_flight: string }>`
    WITH names AS (
      SELECT name FROM unit_groups
      UNION SELECT group_name FROM ready_tallies GROUP BY group_name HAVING sum(n) > 0
    ),
    page AS (
      SELECT name FROM names
      WHERE (${opts.after ?? null}::text IS NULL OR name > ${opts.after ?? null})
        AND (${opts.names ?? null}::text[] IS NULL OR name = ANY(${opts.names ?? null}))
      ORDER BY name LIMIT ${opts.limit + 1}
    )
    SELECT p.name, coalesce(g.weight, 1) AS weight, g.max_in_flight, g.callback_url,
           coalesce((SELECT sum(n) FROM ready_tallies t WHERE t.group_name = p.name), 0) AS ready,
           (SELECT count(*) FROM units u WHERE u.group_name = p.name AND u.status IN ${statusList(IN_FLIGHT)}) AS in_flight
    FROM page p LEFT JOIN unit_groups g ON g.name = p.name
    ORDER BY p.name`.execute(db);
  const more = rows.length > opts.limit;
  const page = more ? rows.slice(0, opts.limit) : rows;
  return {
    groups: page.map((r) => ({ name: r.name, weight: r.weight, maxInFlight: r.max_in_flight, callbackUrl: r.callback_url, ready: Number(r.ready), inFlight: Number(r.in_flight) })),
    nextAfter: more ? page[page.length - 1]!.name : null,
  };
}
