import { sql, type Kysely } from "kysely";

/**
 * Issue 17 (workflows): units that wait for units (docs/architecture.md, "Workflows").
 *
 * - `unit_deps`: one row per edge, "unit_id waits for depends_on", with what a failure of the
 *   dependency does to the dependent (on_failure) and whether the edge is satisfied.
 * - units gain `blocked` (waiting for dependencies: never ready, in no ready count),
 *   `waiting_on` (its edges not yet satisfied, kept in every status; null for a unit that never
 *   had dependencies),
 *   `has_dependents` (someone waits for it), `closed_by` (the failed dependency that closed it,
 *   so a retry of that one re-opens it), and `workflow_id` and `step` (its workflow and local name).
 * - `workflows`: a DAG of steps enqueued together; its status follows its steps.
 *
 * What happens when a unit with dependents finishes is done by a trigger, in the transaction
 * that finishes it, whoever the writer is (the inbox, an operator's cancel or retry, the
 * reconciler): a dependent becomes ready in the same transaction as its last dependency's
 * success, so no wake-up can be lost between two transactions. Unblocking reads the finished
 * units' edges (index unit_deps_by_dep) and nothing else: it costs what their dependents cost.
 *
 * The statement-level trigger runs after the tally triggers (triggers fire in name order), and
 * its own updates fire them again, so blocked units are counted like any status and a blocked
 * unit made pending enters the ready counts through its delta. It never runs inside a top-up
 * (which sets rtb.ready_counted): a top-up finishes no unit.
 */
// Literals, not @rtb/protocol's lists: a migration that has landed must never change.
const T = sql.raw(`('success', 'error', 'cancelled')`);
const STATUSES = sql.raw(`('blocked', 'pending', 'dispatched', 'queued', 'processing', 'success', 'error', 'cancelled')`);

export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    CREATE TABLE workflows (
      id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      name        text NOT NULL CHECK (name ~ '^[A-Za-z0-9_.-]{1,100}$'),
      ref         text UNIQUE CHECK (length(ref) BETWEEN 1 AND 200),
      status      text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'success', 'error', 'cancelled')),
      on_failure  text NOT NULL CHECK (on_failure IN ('cancel', 'fail', 'ignore')),
      created_at  timestamptz NOT NULL DEFAULT now(),
      updated_at  timestamptz NOT NULL DEFAULT now(),
      finished_at timestamptz
    )`.execute(db);
  // GET /workflows?status=..., newest first; retention finds the finished ones by finished_at.
  await sql`CREATE INDEX workflows_by_status ON workflows (status, id)`.execute(db);
  await sql`CREATE INDEX workflows_finished ON workflows (finished_at) WHERE finished_at IS NOT NULL`.execute(db);

  // NOT VALID, then VALIDATE: the new CHECK is checked against existing rows without holding
  // the table's exclusive lock for the whole scan.
  await sql`
    ALTER TABLE units
      DROP CONSTRAINT units_status_check,
      ADD CONSTRAINT units_status_check CHECK (status IN ${STATUSES}) NOT VALID,
      ADD COLUMN workflow_id bigint REFERENCES workflows (id),
      ADD COLUMN step text CHECK (step ~ '^[A-Za-z0-9_.:/-]{1,200}$'),
      ADD COLUMN waiting_on integer,
      ADD COLUMN has_dependents boolean NOT NULL DEFAULT false,
      ADD COLUMN closed_by bigint`.execute(db);
  await sql`ALTER TABLE units VALIDATE CONSTRAINT units_status_check`.execute(db);
  // A workflow's steps by name (one unit per name), and its open steps (is it finished?).
  await sql`CREATE UNIQUE INDEX units_workflow_step ON units (workflow_id, step) WHERE workflow_id IS NOT NULL`.execute(db);
  await sql`CREATE INDEX units_workflow_open ON units (workflow_id) WHERE workflow_id IS NOT NULL AND status NOT IN ${T}`.execute(db);
  await sql`CREATE INDEX units_blocked ON units (id) WHERE status = 'blocked'`.execute(db);
  await sql`CREATE INDEX units_closed_by ON units (closed_by) WHERE closed_by IS NOT NULL`.execute(db);

  await sql`
    CREATE TABLE unit_deps (
      unit_id    bigint NOT NULL,
      depends_on bigint NOT NULL,
      on_failure text NOT NULL CHECK (on_failure IN ('cancel', 'fail', 'ignore')),
      satisfied  boolean NOT NULL DEFAULT false,
      PRIMARY KEY (unit_id, depends_on),
      CHECK (unit_id <> depends_on)
    )`.execute(db);
  await sql`CREATE INDEX unit_deps_by_dep ON unit_deps (depends_on)`.execute(db);

  // Dependents of failed (error, cancelled) units, transitively over the edges a failure
  // closes (on_failure cancel or fail), that still wait: they end as cancelled or error
  // (the edge's policy), with the failed root in closed_by and in their timeline. Dependents
  // by an `ignore` edge are not closed; the nested firing of the trigger satisfies those edges.
  await sql`
    CREATE FUNCTION rtb_close_dependents(failed bigint[]) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
      IF failed IS NULL OR cardinality(failed) = 0 THEN RETURN; END IF;
      WITH RECURSIVE closing (id, root, policy, depth) AS (
        SELECT d.unit_id, d.depends_on, d.on_failure, 1
        FROM unit_deps d JOIN units x ON x.id = d.unit_id
        WHERE d.depends_on = ANY(failed) AND d.on_failure <> 'ignore' AND x.status = 'blocked'
        UNION
        SELECT d.unit_id, c.root, d.on_failure, c.depth + 1
        FROM closing c JOIN unit_deps d ON d.depends_on = c.id JOIN units x ON x.id = d.unit_id
        WHERE d.on_failure <> 'ignore' AND x.status = 'blocked' AND c.depth < 100000
      ),
      one AS (
        SELECT DISTINCT ON (c.id) c.id, c.root, c.policy, coalesce(r.step, r.ref) AS root_name, r.step AS root_step, r.status AS root_status
        FROM closing c JOIN units r ON r.id = c.root
        ORDER BY c.id, c.depth, c.root
      ),
      closed AS (
        UPDATE units u SET
          status = CASE WHEN o.policy = 'fail' THEN 'error' ELSE 'cancelled' END,
          closed_by = o.root, not_before = NULL,
          last_error = format('dependency %s (unit %s) ended in %s', coalesce(o.root_name, o.root::text), o.root, o.root_status),
          updated_at = now()
        FROM one o
        WHERE u.id = o.id AND u.status = 'blocked' AND u.id = ANY(ARRAY(SELECT id FROM one))
        RETURNING u.id, u.attempt, u.status, o.root, o.root_step, o.root_status
      )
      INSERT INTO unit_events (unit_id, attempt, status, at, source, detail)
      SELECT id, attempt, status, now(), 'workflow',
             jsonb_strip_nulls(jsonb_build_object('reason', 'dependency_failed', 'dependency', root, 'step', root_step,
               'dependencyStatus', root_status, 'retryable', false, 'final', true))
      FROM closed;
    END $$`.execute(db);

  // Units whose dependencies' statuses are to be read again (re-opened, retried): their
  // dependencies are locked first (FOR SHARE, in id order), so one that is failing in another
  // transaction is seen failed by the next statement, or fails after this commits and its own
  // trigger sees these units blocked; then those waiting for a dependency that failed are closed.
  await sql`
    CREATE FUNCTION rtb_reclose(ids bigint[]) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
      IF ids IS NULL OR cardinality(ids) = 0 THEN RETURN; END IF;
      PERFORM 1 FROM units WHERE id = ANY(ARRAY(SELECT depends_on FROM unit_deps WHERE unit_id = ANY(ids))) ORDER BY id FOR SHARE;
      PERFORM rtb_close_dependents(ARRAY(
        SELECT DISTINCT d.depends_on FROM unit_deps d JOIN units p ON p.id = d.depends_on JOIN units x ON x.id = d.unit_id
        WHERE d.unit_id = ANY(ids) AND x.status = 'blocked' AND NOT d.satisfied AND d.on_failure <> 'ignore' AND p.status IN ('error', 'cancelled')));
    END $$`.execute(db);

  // Units with dependents that just finished: the edges a success (or, for an ignore edge,
  // any end) satisfies are marked, and each dependent's waiting_on goes down by as many, in
  // the same statement, whatever the dependent's status (waiting_on always counts the
  // unsatisfied edges, so a unit re-opened or retried later knows what it still waits for);
  // a blocked one with none left becomes pending. Relative updates only: two transactions
  // satisfying edges of one dependent serialise on its row and both count. Then the failures
  // close what they close.
  await sql`
    CREATE FUNCTION rtb_deps_finished(done bigint[]) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
      WITH sat AS (
        UPDATE unit_deps d SET satisfied = true
        FROM units p
        WHERE d.depends_on = ANY(done) AND p.id = d.depends_on AND NOT d.satisfied
          AND (p.status = 'success' OR d.on_failure = 'ignore')
        RETURNING d.unit_id
      ),
      per AS (SELECT unit_id, count(*) AS n FROM sat GROUP BY unit_id),
      changed AS (
        UPDATE units u SET
          waiting_on = u.waiting_on - per.n,
          status = CASE WHEN u.status = 'blocked' AND u.waiting_on - per.n <= 0 THEN 'pending' ELSE u.status END,
          updated_at = CASE WHEN u.status = 'blocked' THEN now() ELSE u.updated_at END
        FROM per, units b
        WHERE u.id = per.unit_id AND b.id = u.id AND u.id = ANY(ARRAY(SELECT unit_id FROM per))
        -- b: the row as this statement found it, so only what was blocked gets the event.
        RETURNING u.id, u.attempt, u.status, b.status AS was
      )
      INSERT INTO unit_events (unit_id, attempt, status, at, source, detail)
      SELECT id, attempt, 'pending', now(), 'workflow', '{"action":"unblocked"}'::jsonb FROM changed WHERE status = 'pending' AND was = 'blocked';
      PERFORM rtb_close_dependents(ARRAY(SELECT id FROM units WHERE id = ANY(done) AND status IN ('error', 'cancelled')));
    END $$`.execute(db);

  // Units with dependents back from error or cancelled (an operator's retry or redrive): their
  // ignore edges, which their end had satisfied, count again; what their failure closed
  // (closed_by them) waits again, blocked, or pending when nothing is left to wait for, and is
  // closed again if another of its dependencies failed meanwhile (rtb_reclose).
  await sql`
    CREATE FUNCTION rtb_deps_reopened(opened bigint[]) RETURNS void LANGUAGE plpgsql AS $$
    DECLARE
      again bigint[];
    BEGIN
      WITH un AS (
        UPDATE unit_deps d SET satisfied = false
        WHERE d.depends_on = ANY(opened) AND d.satisfied
        RETURNING d.unit_id
      ),
      per AS (SELECT unit_id, count(*) AS n FROM un GROUP BY unit_id)
      UPDATE units u SET waiting_on = u.waiting_on + per.n
      FROM per WHERE u.id = per.unit_id AND u.id = ANY(ARRAY(SELECT unit_id FROM per));

      WITH back AS (
        UPDATE units u SET status = CASE WHEN u.waiting_on > 0 THEN 'blocked' ELSE 'pending' END,
          closed_by = NULL, last_error = NULL, updated_at = now()
        WHERE u.closed_by = ANY(opened) AND u.status IN ('error', 'cancelled')
        RETURNING u.id, u.attempt, u.status, u.closed_by
      ),
      logged AS (
        INSERT INTO unit_events (unit_id, attempt, status, at, source, detail)
        SELECT b.id, b.attempt, b.status, now(), 'workflow', jsonb_build_object('action', 'reopened', 'dependency', b.closed_by)
        FROM back b
      )
      SELECT array_agg(id) INTO again FROM back;
      PERFORM rtb_reclose(again);
    END $$`.execute(db);

  // A workflow's status from its steps: running while one is open, else error if one ended in
  // error, cancelled if one was cancelled, success otherwise. Its rows are locked in id order
  // first, so two transactions finishing its last two steps decide one after the other, and
  // the second sees the first's step finished.
  await sql`
    CREATE FUNCTION rtb_settle_workflows(wfs bigint[]) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
      PERFORM 1 FROM workflows WHERE id = ANY(wfs) ORDER BY id FOR NO KEY UPDATE;
      UPDATE workflows w SET status = s.status, updated_at = now(),
        finished_at = CASE WHEN s.status = 'running' THEN NULL ELSE now() END
      FROM (
        SELECT w2.id,
          CASE WHEN EXISTS (SELECT FROM units u WHERE u.workflow_id = w2.id AND u.status NOT IN ${T}) THEN 'running'
               WHEN EXISTS (SELECT FROM units u WHERE u.workflow_id = w2.id AND u.status = 'error') THEN 'error'
               WHEN EXISTS (SELECT FROM units u WHERE u.workflow_id = w2.id AND u.status = 'cancelled') THEN 'cancelled'
               ELSE 'success' END AS status
        FROM workflows w2 WHERE w2.id = ANY(wfs)
      ) s
      WHERE w.id = s.id AND w.status <> s.status;
    END $$`.execute(db);

  await sql`
    CREATE FUNCTION units_workflow_update() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
      finished bigint[];
      reopened bigint[];
      wfs bigint[];
    BEGIN
      -- Units outside workflows that nobody waits for (nearly every statement of the dispatch
      -- path): nothing to do, decided from the new rows alone.
      IF NOT EXISTS (SELECT FROM new_rows WHERE has_dependents OR workflow_id IS NOT NULL) THEN RETURN NULL; END IF;
      -- Old and new rows paired by grouping, not by a join: the transition tables have no
      -- statistics, and a nested loop over them cost 6.7 s for the 9,999 rows a fan-out's
      -- edges mark.
      SELECT array_agg(id) FILTER (WHERE has_dependents AND now_terminal AND NOT was_terminal),
             array_agg(id) FILTER (WHERE has_dependents AND was_terminal AND NOT now_terminal),
             array_agg(DISTINCT workflow_id) FILTER (WHERE workflow_id IS NOT NULL AND now_terminal <> was_terminal)
        INTO finished, reopened, wfs
        FROM (
          SELECT id, bool_or(is_new AND has_dependents) AS has_dependents, max(workflow_id) AS workflow_id,
                 bool_or(is_new AND terminal) AS now_terminal, bool_or(NOT is_new AND terminal) AS was_terminal
          FROM (
            SELECT id, has_dependents, workflow_id, status IN ${T} AS terminal, true AS is_new FROM new_rows
            UNION ALL
            SELECT id, has_dependents, workflow_id, status IN ${T}, false FROM old_rows
          ) AS x
          GROUP BY id
        ) AS paired;
      IF finished IS NOT NULL THEN PERFORM rtb_deps_finished(finished); END IF;
      IF reopened IS NOT NULL THEN PERFORM rtb_deps_reopened(reopened); END IF;
      IF wfs IS NOT NULL THEN PERFORM rtb_settle_workflows(wfs); END IF;
      RETURN NULL;
    END $$`.execute(db);
  await sql`
    CREATE TRIGGER units_workflow_update AFTER UPDATE ON units
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION units_workflow_update()`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TRIGGER units_workflow_update ON units`.execute(db);
  await sql`DROP FUNCTION units_workflow_update(), rtb_settle_workflows(bigint[]), rtb_deps_reopened(bigint[]), rtb_deps_finished(bigint[]), rtb_reclose(bigint[]), rtb_close_dependents(bigint[])`.execute(db);
  await sql`DROP TABLE unit_deps`.execute(db);
  await sql`DELETE FROM units WHERE status = 'blocked'`.execute(db);
  await sql`
    ALTER TABLE units
      DROP CONSTRAINT units_status_check,
      ADD CONSTRAINT units_status_check CHECK (status IN ('pending','dispatched','queued','processing','success','error','cancelled')),
      DROP COLUMN workflow_id, DROP COLUMN step, DROP COLUMN waiting_on, DROP COLUMN has_dependents, DROP COLUMN closed_by`.execute(db);
  await sql`DROP TABLE workflows`.execute(db);
}
