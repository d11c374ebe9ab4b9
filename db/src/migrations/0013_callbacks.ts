import { sql, type Kysely } from "kysely";

/** The terminal statuses as they were when this migration landed (a migration never changes). */
const T = sql.raw(`('success', 'error', 'cancelled')`);

/**
 * Issue 19 (completion callbacks): a unit may name a `callback_url`, a group may have one; when
 * a unit becomes terminal (success, error, cancelled), one row of `callbacks` is written in the
 * same transaction as the status, by a trigger, so every path that ends a unit (the inbox, the
 * reconciler, a cancel, a workflow's cascade) writes one, and none can be lost between the
 * status and the delivery. The api's delivery loop (services/api/src/callback-deliverer.ts)
 * POSTs each row's body until the receiver answers 2xx or the attempts run out.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`ALTER TABLE units ADD COLUMN callback_url text`.execute(db);
  await sql`ALTER TABLE unit_groups ADD COLUMN callback_url text`.execute(db);
  // The trigger asks "does any group have a URL?" on every statement that ends units.
  await sql`CREATE INDEX unit_groups_with_callback ON unit_groups (name) WHERE callback_url IS NOT NULL`.execute(db);
  await sql`
    CREATE TABLE callbacks (
      id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      unit_id      bigint NOT NULL,
      url          text NOT NULL,
      body         jsonb NOT NULL,
      state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'given_up')),
      attempts     int NOT NULL DEFAULT 0,
      next_at      timestamptz NOT NULL DEFAULT now(),
      history      jsonb NOT NULL DEFAULT '[]',
      created_at   timestamptz NOT NULL DEFAULT now(),
      finished_at  timestamptz
    )`.execute(db);
  // What the delivery loop claims (pending and due), and a unit's deliveries (its timeline, retention).
  await sql`CREATE INDEX callbacks_due ON callbacks (next_at) WHERE state = 'pending'`.execute(db);
  await sql`CREATE INDEX callbacks_by_unit ON callbacks (unit_id)`.execute(db);

  await sql`
    CREATE FUNCTION units_callback_update() RETURNS trigger LANGUAGE plpgsql AS $$
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
                   'timestamp', now(),
                   'data', jsonb_build_object(
                     'id', n.id, 'ref', n.ref, 'kind', n.kind, 'group', n.group_name, 'status', n.status,
                     'attempt', n.attempt, 'result', n.result,
                     'error', CASE WHEN n.status = 'error' THEN n.last_error END,
                     'finishedAt', n.updated_at,
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
    END $$`.execute(db);
  await sql`
    CREATE TRIGGER units_callback_update AFTER UPDATE ON units
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION units_callback_update()`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TRIGGER units_callback_update ON units`.execute(db);
  await sql`DROP FUNCTION units_callback_update()`.execute(db);
  await sql`DROP TABLE callbacks`.execute(db);
  await sql`DROP INDEX unit_groups_with_callback`.execute(db);
  await sql`ALTER TABLE unit_groups DROP COLUMN callback_url`.execute(db);
  await sql`ALTER TABLE units DROP COLUMN callback_url`.execute(db);
}
