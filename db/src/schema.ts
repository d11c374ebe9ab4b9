import type { ColumnType, Generated, Insertable, Selectable } from "kysely";

import type { FailurePolicy, UnitStatus, WorkflowStatusName } from "@rtb/protocol";

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type Json = ColumnType<unknown, string | undefined, string>;

export interface UnitsTable {
  id: Generated<number>;
  kind: string;
  group_name: string;
  priority: number;
  payload: Json;
  /** Producer's idempotency key: the same ref never creates a second unit. */
  ref: string | null;
  status: UnitStatus;
  /** Incremented by every dispatch; every message carries it. */
  attempt: Generated<number>;
  max_attempts: number;
  /** A pending unit is not eligible before this (retry backoff). */
  not_before: Timestamp | null;
  dispatched_at: Timestamp | null;
  result: Json | null;
  last_error: string | null;
  /** Re-publishes of attempt `republished_attempt` by the reconciler (migration 0006). */
  republishes: Generated<number>;
  republished_attempt: number | null;
  /** When the unit first found no agent for its kind (migration 0007); null once routed. */
  agent_wait_since: Timestamp | null;
  /** The schedule and occurrence that made the unit (migration 0008); null for a producer's. */
  schedule_name: string | null;
  scheduled_for: Timestamp | null;
  /** Its workflow and its name there (migration 0010); null for a unit outside workflows. */
  workflow_id: number | null;
  step: string | null;
  /** Dependencies not yet satisfied while blocked; null: the unit never had any. */
  waiting_on: number | null;
  /** Some unit waits for this one (unit_deps.depends_on): its end is the trigger's business. */
  has_dependents: Generated<boolean>;
  /** The failed dependency whose end closed this unit; a retry of that one re-opens it. */
  closed_by: number | null;
  /** The W3C traceparent every dispatch of the unit continues (migration 0012); null: no trace. */
  traceparent: string | null;
  /** Where its end is POSTed (migration 0013); null: its group's, if any. */
  callback_url: string | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface UnitEventsTable {
  id: Generated<number>;
  unit_id: number;
  attempt: number;
  status: UnitStatus;
  /** When the reporting service saw it. */
  at: Timestamp;
  recorded_at: Timestamp;
  /** `api`, `reconciler`, `leader:<id>`, `agent:<id>` */
  source: string;
  detail: Json | null;
}

/**
 * Per group: when it was last served (the memory of the round-robin across groups) and the
 * operator's settings for its fair share.
 */
export interface UnitGroupsTable {
  name: string;
  last_served: number | null;
  /** Its share relative to other groups' (default 1): weight 2 gets twice the units in flight. */
  weight: Generated<number>;
  /** At most this many units in flight (dispatched, queued, processing); null: no limit. */
  max_in_flight: number | null;
  /** Where its units' ends are POSTed when a unit names none (migration 0013); null: none. */
  callback_url: string | null;
}

/** Deltas of the count of units per status, written by triggers (migration 0004). */
export interface StatusTalliesTable {
  id: Generated<number>;
  status: UnitStatus;
  n: number;
}

/**
 * The count of ready units (pending, no backoff) per group and priority: a view (migration
 * 0005) over the folded counts (ready_counts) and the deltas not yet folded (ready_deltas),
 * so a sum of `n` per key is exact. Read-only; dispatch reads the tables behind it directly.
 */
export interface ReadyTalliesView {
  group_name: string;
  priority: number;
  n: number;
}

/** One row: the state shared by every api replica. */
export interface ControlTable {
  id: Generated<boolean>;
  dispatching: boolean;
  dispatching_changed_at: Timestamp | null;
  leader_id: string | null;
  leader_utilization: Json | null;
  leader_reported_at: Timestamp | null;
  /** When leader_id first reported after a different leader (or none). */
  leader_since: Timestamp | null;
  /** Counter behind unit_groups.last_served; advanced by every top-up. */
  served_seq: Generated<number>;
}

/** A leader, agent or api process lifetime, as last seen by an api. */
export interface ServiceInstancesTable {
  service: "api" | "leader" | "agent";
  id: string;
  started_at: Timestamp;
  last_seen: Timestamp;
  /** Messages this instance dead-lettered (its own running count). */
  dead_lettered: number;
}

/** Per service: what pruned service_instances rows had counted (migration 0006). */
export interface ServiceRetiredTable {
  service: "api" | "leader" | "agent";
  instances: Generated<number>;
  dead_lettered: Generated<number>;
}

/** Kinds whose units wait for an agent, and since when (migration 0007). */
export interface KindsWithoutAgentsTable {
  kind: string;
  since: Timestamp;
}

/** A unit enqueued at each occurrence of a cron expression (migration 0008, schedules.ts). */
export interface SchedulesTable {
  name: string;
  cron: string;
  time_zone: string;
  kind: string;
  group_name: string;
  priority: number;
  payload: Json;
  max_attempts: number;
  missed: "skip" | "once" | "each";
  missed_max: number | null;
  /** Paused since then; null: it fires. */
  paused_at: Timestamp | null;
  /** The first occurrence neither fired nor skipped yet. */
  next_fire_at: Timestamp;
  last_occurrence: Timestamp | null;
  last_unit_id: number | null;
  last_fired_at: Timestamp | null;
  fired: Generated<number>;
  skipped: Generated<number>;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
}

/** One row: what retention pruned in all, and its last pass (migration 0009). */
export interface RetentionTable {
  id: Generated<boolean>;
  pruned_units: Generated<number>;
  pruned_events: Generated<number>;
  last_run_at: Timestamp | null;
  /** The api replica (RTB_API_ID) that ran the last pass. */
  last_run_by: string | null;
}

/** Who holds each duty done once across api replicas, until when (migration 0011, duties.ts). */
export interface DutyLeasesTable {
  duty: string;
  holder: string;
  /** When this holder took it (kept across its renewals). */
  since: Timestamp;
  renewed_at: Timestamp;
  expires_at: Timestamp;
  /** Times it passed from one holder to another. */
  handovers: Generated<number>;
}

/** One delivery of a unit's end to its callback URL (migration 0013, callbacks.ts). */
export interface CallbacksTable {
  id: Generated<number>;
  unit_id: number;
  url: string;
  /** What is POSTed, as the trigger wrote it when the unit ended. */
  body: Json;
  state: "pending" | "delivered" | "given_up";
  /** Requests sent (or claimed to be sent) so far. */
  attempts: Generated<number>;
  /** Pending: not claimed before this (its backoff, or the claim's lease). */
  next_at: Generated<Date>;
  /** One entry per attempt: `{at, outcome, statusCode?, error?}`. */
  history: ColumnType<unknown, string | undefined, string>;
  created_at: Generated<Date>;
  finished_at: Timestamp | null;
  /** Random (migration 0014): the `webhook-id` is `msg_` and its 32 hex digits, unique across installations. */
  webhook_id: Generated<string>;
  /** The URL's authority, lower-cased; generated (migration 0015): the per-host cap's key. */
  host: Generated<string>;
}

export type WorkflowStatus = WorkflowStatusName;

/** "unit_id waits for depends_on" (migration 0010). */
export interface UnitDepsTable {
  unit_id: number;
  depends_on: number;
  on_failure: FailurePolicy;
  satisfied: Generated<boolean>;
}

/** A DAG of steps enqueued together (migration 0010); its status follows its steps. */
export interface WorkflowsTable {
  id: Generated<number>;
  name: string;
  ref: string | null;
  status: Generated<WorkflowStatus>;
  on_failure: FailurePolicy;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
  finished_at: Timestamp | null;
}

export interface Database {
  units: UnitsTable;
  unit_events: UnitEventsTable;
  unit_groups: UnitGroupsTable;
  status_tallies: StatusTalliesTable;
  ready_tallies: ReadyTalliesView;
  control: ControlTable;
  service_instances: ServiceInstancesTable;
  service_retired: ServiceRetiredTable;
  kinds_without_agents: KindsWithoutAgentsTable;
  schedules: SchedulesTable;
  retention: RetentionTable;
  unit_deps: UnitDepsTable;
  workflows: WorkflowsTable;
  duty_leases: DutyLeasesTable;
  callbacks: CallbacksTable;
}

export type UnitRow = Selectable<UnitsTable>;
export type NewUnitRow = Insertable<UnitsTable>;
export type UnitEventRow = Selectable<UnitEventsTable>;
