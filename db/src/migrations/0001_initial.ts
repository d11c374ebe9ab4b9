import { sql, type Kysely } from "kysely";

export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    CREATE TABLE units (
      id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      kind          text NOT NULL CHECK (kind ~ '^[A-Za-z0-9_.-]{1,100}$'),
      group_name    text NOT NULL DEFAULT 'default',
      priority      integer NOT NULL DEFAULT 0,
      payload       jsonb NOT NULL DEFAULT '{}',
      ref           text UNIQUE,
      status        text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending','dispatched','queued','processing','success','error','cancelled')),
      attempt       integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
      max_attempts  integer NOT NULL CHECK (max_attempts >= 1),
      not_before    timestamptz,
      dispatched_at timestamptz,
      result        jsonb,
      last_error    text,
      created_at    timestamptz NOT NULL DEFAULT now(),
      updated_at    timestamptz NOT NULL DEFAULT now()
    )`.execute(db);
  // The backlog in dispatch order, only pending rows: the top-up and GET /next read it.
  await sql`CREATE INDEX units_backlog ON units (priority DESC, group_name, id) WHERE status = 'pending'`.execute(db);
  // Units in flight: counted on every top-up (at most MAX_QUEUE of them), scanned by the reconciler.
  await sql`CREATE INDEX units_in_flight ON units (status, dispatched_at) WHERE status IN ('dispatched','queued','processing')`.execute(db);
  // Retries waiting for their backoff: when to wake the dispatcher next.
  await sql`CREATE INDEX units_retry_wait ON units (not_before) WHERE status = 'pending' AND not_before IS NOT NULL`.execute(db);

  await sql`
    CREATE TABLE unit_events (
      id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      unit_id     bigint NOT NULL REFERENCES units (id) ON DELETE CASCADE,
      attempt     integer NOT NULL,
      status      text NOT NULL,
      at          timestamptz NOT NULL,
      recorded_at timestamptz NOT NULL DEFAULT now(),
      source      text NOT NULL,
      detail      jsonb
    )`.execute(db);
  await sql`CREATE INDEX unit_events_by_unit ON unit_events (unit_id, id)`.execute(db);

  // One row per group that has ever been dispatched from: when it was last served, so that
  // round-robin across groups has a memory between top-ups (dispatch-order.ts).
  await sql`
    CREATE TABLE unit_groups (
      name        text PRIMARY KEY,
      last_served bigint NOT NULL
    )`.execute(db);

  await sql`
    CREATE TABLE control (
      id                     boolean PRIMARY KEY DEFAULT true CHECK (id),
      dispatching            boolean NOT NULL DEFAULT false,
      dispatching_changed_at timestamptz,
      leader_id              text,
      leader_utilization     jsonb,
      leader_reported_at     timestamptz,
      served_seq             bigint NOT NULL DEFAULT 0
    )`.execute(db);
  await sql`INSERT INTO control DEFAULT VALUES`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TABLE control, unit_groups, unit_events, units`.execute(db);
}
