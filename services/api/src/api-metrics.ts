import { DUTY_NAMES, PRUNE_DUE_CAP, UNIT_STATUSES } from "@rtb/protocol";
import { kindsWithoutAgents, retentionTotals, summarize, type Db, type IgnoreReason, type Summary } from "@rtb/db";
import {
  countReconnects,
  counterFrom,
  createServiceMetrics,
  Gauge,
  Histogram,
  labelledCounterFrom,
  type Broker,
  type Logger,
  type ServiceMetrics,
} from "@rtb/runtime";
import { dueForPruning } from "./retention.ts";
import type { ApiStats } from "./stats.ts";
import type { Duties } from "./duties.ts";

/** The api's metrics: the common ones, and the histograms its parts observe. */
export interface ApiMetrics extends ServiceMetrics {
  /** Dispatch -> terminal (success|error) of an attempt, by kind and status. */
  readonly unitDuration: Histogram<"kind" | "status">;
  /** Status messages per applied inbox batch. */
  readonly inboxBatch: Histogram;
  /** One top-up: claim, then publish with confirms. */
  readonly topUpDuration: Histogram;
}

/** Reasons the api dead-letters a message (inbox-consumer.ts), exported at 0 before they happen. */
const DEAD_LETTER_REASONS = ["invalid_status_message", "unstorable_status_message"];
/** Every IgnoreReason (db/src/status-transitions.ts): the compiler says when one is added. */
const IGNORE_REASONS = Object.keys({ unknown_unit: 0, stale_attempt: 0, cancelled: 0, not_in_flight: 0, not_forward: 0 } satisfies Record<IgnoreReason, 0>);

export function createApiMetrics(opts?: { processMetrics?: boolean }): ApiMetrics {
  const common = createServiceMetrics("api", opts);
  const registers = [common.registry];
  return {
    ...common,
    unitDuration: new Histogram({
      name: "rtb_unit_duration_seconds",
      help: "Time from dispatch to the terminal status (success or error) of one attempt, by kind",
      labelNames: ["kind", "status"],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600],
      registers,
    }),
    inboxBatch: new Histogram({
      name: "rtb_inbox_batch_messages",
      help: "Status messages applied together in one database transaction",
      buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000],
      registers,
    }),
    topUpDuration: new Histogram({
      name: "rtb_top_up_duration_seconds",
      help: "Duration of one top-up of the outbox: the claim transaction, then the publishes and their confirms",
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
  };
}

/**
 * What the api's metrics read at scrape time: the in-process counters (stats.ts), the
 * statements sent to PostgreSQL, the broker's reconnects, and the unit counts from the
 * tallies (one cheap read per scrape, shared by the gauges that need it).
 */
export function collectApiMetrics(
  metrics: ApiMetrics,
  deps: { db: Db; broker: Broker; stats: ApiStats; statements: () => number; maxQueue: number; retentionMs: number; logger: Logger; duties: Pick<Duties, "holds"> },
): void {
  const { registry } = metrics;
  const { stats } = deps;
  countReconnects(metrics, deps.broker);
  counterFrom(registry, "rtb_db_statements_total", "Statements this api sent to PostgreSQL (transaction control included)", deps.statements);
  counterFrom(registry, "rtb_units_dispatched_total", "Units claimed and published to the outbox by this api's top-ups", () => stats.dispatched);
  counterFrom(registry, "rtb_units_refused_total", "Units ended as permanent errors because no broker message could carry them (RTB_BROKER_MAX_MESSAGE_BYTES)", () => stats.refused);
  counterFrom(registry, "rtb_schedule_occurrences_fired_total", "Schedule occurrences this api fired: one unit enqueued for each", () => stats.scheduleFired);
  counterFrom(
    registry,
    "rtb_schedule_occurrences_skipped_total",
    "Missed schedule occurrences (later than RTB_SCHEDULE_GRACE_MS: the api down, the schedule paused) this api skipped by their schedules' policy",
    () => stats.scheduleSkipped,
  );
  counterFrom(registry, "rtb_status_reports_applied_total", "Status reports that changed a unit's status", () => stats.applied);
  labelledCounterFrom(
    registry,
    "rtb_status_reports_ignored_total",
    "Status reports recorded nowhere but here: duplicate, stale, out of order or of a cancelled attempt, by reason",
    "reason",
    () => stats.ignored,
    IGNORE_REASONS,
  );
  labelledCounterFrom(registry, "rtb_dead_lettered_total", "Messages this api dead-lettered, by reason", "reason", () => stats.deadLettered, DEAD_LETTER_REASONS);

  // The gauges below share one read of the tallies and the switch per scrape: a registry
  // starts every collect() in the same tick, so they all find the read in flight.
  let reading: Promise<Summary | null> | null = null;
  const tallies = () =>
    (reading ??= summarize(deps.db)
      .catch((err: unknown) => {
        deps.logger.warn({ err: (err as Error).message }, "metrics: cannot read the unit counts");
        return null;
      })
      .finally(() => (reading = null)));

  new Gauge({
    name: "rtb_units",
    help: "Units by status (from the tallies, read at scrape time)",
    labelNames: ["status"],
    registers: [registry],
    async collect() {
      const summary = await tallies();
      // The database is unreachable: no value rather than a stale one.
      this.reset();
      if (summary) for (const s of UNIT_STATUSES) this.set({ status: s }, summary.counts[s]);
    },
  });
  new Gauge({
    name: "rtb_workflows_running",
    help: "Workflows with a step not finished (their steps are in rtb_units, blocked ones as status blocked)",
    registers: [registry],
    async collect() {
      const summary = await tallies();
      this.reset();
      if (summary) this.set(summary.workflowsRunning);
    },
  });
  new Gauge({
    name: "rtb_outstanding",
    help: "Units dispatched but not yet started (dispatched + queued); kept <= rtb_outstanding_max",
    registers: [registry],
    async collect() {
      const summary = await tallies();
      this.reset();
      if (summary) this.set(summary.outstanding);
    },
  });
  new Gauge({
    name: "rtb_backlog_units",
    help: "Pending units by what they wait for: ready (nothing), clock (a due time: delayed or a retry backoff), agent (an agent of their kind)",
    labelNames: ["waiting_for"],
    registers: [registry],
    async collect() {
      const summary = await tallies();
      this.reset();
      if (!summary) return;
      const { ready, onClock, forAgents } = summary.backlog;
      this.set({ waiting_for: "nothing" }, ready);
      this.set({ waiting_for: "clock" }, onClock);
      this.set({ waiting_for: "agent" }, forAgents);
    },
  });
  new Gauge({
    name: "rtb_next_due_timestamp_seconds",
    help: "When the earliest unit waiting on a clock is due, as a Unix time (absent: none waits)",
    registers: [registry],
    async collect() {
      const summary = await tallies();
      this.reset();
      if (summary?.backlog.nextDueAt) this.set(summary.backlog.nextDueAt.getTime() / 1000);
    },
  });
  new Gauge({
    name: "rtb_dispatching",
    help: "1 while dispatching is on (GET /go), 0 while paused",
    registers: [registry],
    async collect() {
      const summary = await tallies();
      this.reset();
      if (summary) this.set(summary.dispatching ? 1 : 0);
    },
  });
  new Gauge({
    name: "rtb_kind_without_agent_since_seconds",
    help: "Kinds whose units wait for an agent (none consumes the kind yet): when the first one found none, as a Unix time",
    labelNames: ["kind"],
    registers: [registry],
    async collect() {
      const kinds = await kindsWithoutAgents(deps.db).catch(() => null);
      this.reset();
      for (const k of kinds ?? []) this.set({ kind: k.kind }, k.since.getTime() / 1000);
    },
  });
  counterFrom(registry, "rtb_pruned_units_total", "Finished units this api deleted as older than RTB_RETENTION", () => stats.pruned.units);
  counterFrom(registry, "rtb_pruned_events_total", "Timeline events this api deleted with the units it pruned", () => stats.pruned.events);
  // Nothing is ever due with RTB_RETENTION=0: no series, rather than a 0 that reads as "keeping up".
  if (deps.retentionMs > 0) {
    const { retentionMs } = deps;
    new Gauge({
      name: "rtb_prune_due_units",
      help: `Finished units older than RTB_RETENTION not pruned yet, counted up to ${PRUNE_DUE_CAP}`,
      registers: [registry],
      async collect() {
        const due = await dueForPruning(deps.db, retentionMs).catch(() => null);
        this.reset();
        if (due !== null) this.set(due);
      },
    });
  }
  new Gauge({
    name: "rtb_prune_last_run_timestamp_seconds",
    help: "When the last retention pass ran, on any api replica (Unix time); 0 before the first",
    registers: [registry],
    async collect() {
      const totals = await retentionTotals(deps.db).catch(() => null);
      this.reset();
      if (totals?.lastRunAt) this.set(totals.lastRunAt.getTime() / 1000);
    },
  });
  new Gauge({
    name: "rtb_duty_held",
    help: "1 for each duty done once across api replicas (reconciler, schedules, retention, tallies) that this api holds now, else 0: summed over the apis, 1 per duty",
    labelNames: ["duty"],
    registers: [registry],
    collect() {
      for (const duty of DUTY_NAMES) this.set({ duty }, deps.duties.holds(duty) ? 1 : 0);
    },
  });
  const max = new Gauge({ name: "rtb_outstanding_max", help: "RTB_BROADCAST_MAX_QUEUE: the bound on rtb_outstanding", registers: [registry] });
  max.set(deps.maxQueue);
}
