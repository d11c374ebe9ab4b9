import { sql, type Kysely, type RawBuilder } from "kysely";

/** The terminal statuses as they were when this migration landed (a migration never changes). */
const T = sql.raw(`('success', 'error', 'cancelled')`);

/**
 * Completion callbacks, two fixes to migration 0013:
 *
 * - Times. 0013's trigger put `now()` and `updated_at` into the body as jsonb renders a
 *   timestamptz: `2026-12-06T21:49:31.126048+00:00`, in the session's TimeZone (`+01:00` in a
 *   session set to Europe/Paris). The published body (`callbackPayload`, /openapi.json
 *   `webhooks.unitFinished`) says ISO 8601 in UTC with `Z`, which is what JavaScript's
 *   `toISOString()` writes and what a receiver validating the schema accepts. They are now
 *   rendered as UTC, to the millisecond, with `Z`, whatever the session's TimeZone (`AT TIME
 *   ZONE 'UTC'` gives a timestamp without zone, which to_char prints as is). Milliseconds,
 *   truncated as node-postgres truncates a timestamptz into a Date: `finishedAt` is the unit's
 *   `updatedAt` exactly. Pending deliveries written before are rewritten likewise (the sent
 *   ones are never shown again).
 * - Ids. The `webhook-id` was `msg_rtb_<row id>`: two installations sending to one receiver
 *   (staging and production), or a database restored from a backup, reuse row ids, and a
 *   receiver deduplicating on the id would drop real deliveries. Each delivery now has a random
 *   `webhook_id` (gen_random_uuid, built into PostgreSQL 13+), sent as `msg_<32 hex digits>`.
 *   A volatile default gives every existing row its own value (the table is rewritten once).
 */
const utc = (x: RawBuilder<unknown>) => sql`to_char(${x} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;
/** 0013's rendering, for `down`. */
const asJsonb = (x: RawBuilder<unknown>) => x;

/** The trigger function of 0013 with the times rendered by `time`. */
const triggerFunction = (time: (x: RawBuilder<unknown>) => RawBuilder<unknown>) => sql`
  CREATE OR REPLACE FUNCTION units_callback_update() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    -- The dispatch path's statements end no unit: decided from the new rows alone.
    IF NOT EXISTS (SELECT FROM new_rows WHERE status IN ${T}) THEN RETURN NULL; END IF;
    -- No URL anywhere (the feature unused): one probe of a partial index more.
    IF NOT EXISTS (SELECT FROM new_rows WHERE status IN ${T} AND callback_url IS NOT NULL)
       AND NOT EXISTS (SELECT FROM unit_groups WHERE callback_url IS NOT NULL) THEN RETURN NULL; END IF;
    -- Units that became terminal in this statement (not those already terminal before, whose
    -- has_dependents a new dependent set): old and new rows paired by grouping, not by a join
    -- (the transition tables have no statistics; see units_workflow_update, migration 0010).
    INSERT INTO callbacks (unit_id, url, body)
    SELECT id, url, body FROM (
      SELECT id, bool_and(is_new) AS ended, (array_agg(url) FILTER (WHERE is_new))[1] AS url, (array_agg(body) FILTER (WHERE is_new))[1] AS body
      FROM (
        SELECT n.id, true AS is_new, COALESCE(n.callback_url, g.callback_url) AS url,
               jsonb_build_object(
                 'type', 'unit.finished',
                 'timestamp', ${time(sql`now()`)},
                 'data', jsonb_build_object(
                   'id', n.id, 'ref', n.ref, 'kind', n.kind, 'group', n.group_name, 'status', n.status,
                   'attempt', n.attempt, 'result', n.result,
                   'error', CASE WHEN n.status = 'error' THEN n.last_error END,
                   'finishedAt', ${time(sql`n.updated_at`)},
                   'workflow', CASE WHEN n.workflow_id IS NOT NULL THEN jsonb_build_object('id', n.workflow_id, 'step', n.step) END)) AS body
        FROM new_rows n LEFT JOIN unit_groups g ON g.name = n.group_name AND n.callback_url IS NULL
        WHERE n.status IN ${T} AND COALESCE(n.callback_url, g.callback_url) IS NOT NULL
        UNION ALL
        SELECT id, false, NULL, NULL FROM old_rows WHERE status IN ${T}
      ) AS x
      GROUP BY id
    ) AS paired
    WHERE ended AND url IS NOT NULL
    ORDER BY id;
    RETURN NULL;
  END $$`;

export async function up(db: Kysely<any>): Promise<void> {
  await triggerFunction(utc).execute(db);
  const fix = (path: string) => sql`jsonb_set(body, ${sql.lit(path)}, to_jsonb(${utc(sql`(body #>> ${sql.lit(path)})::timestamptz`)}))`;
  await sql`UPDATE callbacks SET body = ${fix("{timestamp}")} WHERE state = 'pending'`.execute(db);
  await sql`UPDATE callbacks SET body = ${fix("{data,finishedAt}")} WHERE state = 'pending'`.execute(db);
  await sql`ALTER TABLE callbacks ADD COLUMN webhook_id uuid NOT NULL DEFAULT gen_random_uuid()`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`ALTER TABLE callbacks DROP COLUMN webhook_id`.execute(db);
  await triggerFunction(asJsonb).execute(db);
}
