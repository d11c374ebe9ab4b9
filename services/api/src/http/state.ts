import { deadLetteredByService, dutyLeases, kindsWithoutAgents, recentInstances, summarize, summarizeSchedules, type BacklogShape } from "@rtb/db";
import type { StateView } from "@rtb/protocol";
import { SEEN_RECENTLY_MS, type Broker } from "@rtb/runtime";
import { dueForPruning } from "../retention.ts";
import type { AppDeps } from "./deps.ts";

export type StateDeps = Pick<AppDeps, "db" | "broker" | "stats" | "maxQueue" | "duties"> & { settings: Pick<AppDeps["settings"], "retention"> };

/**
 * The state of things: the body of GET / (as JSON) and of the `state` event of GET /events.
 * One builder, so the dashboard and curl never disagree; typed as the protocol's StateView,
 * timestamps written as JSON writes them (toISOString), so the compiler checks the answer.
 */
export async function stateSnapshot({ db, broker, stats, maxQueue, duties, settings }: StateDeps): Promise<StateView> {
  const { retention } = settings;
  const [summary, deadLetters, instances, deadByService, waiting, schedules, due, leases] = await Promise.all([
    summarize(db),
    deadDepth(broker),
    recentInstances(db, SEEN_RECENTLY_MS),
    deadLetteredByService(db),
    kindsWithoutAgents(db),
    summarizeSchedules(db),
    retention.ms === 0 ? null : dueForPruning(db, retention.ms),
    dutyLeases(db),
  ]);
  const seen = (service: string) =>
    instances.filter((i) => i.service === service).map(({ id, startedAt, lastSeen, deadLettered }) => ({ id, startedAt: startedAt.toISOString(), lastSeen: lastSeen.toISOString(), deadLettered }));
  const { leader, retention: pruned } = summary;
  return {
    counts: summary.counts,
    total: summary.total,
    outstanding: summary.outstanding,
    maxQueue,
    backlog: backlogView(summary.backlog),
    dispatching: summary.dispatching,
    dispatchingSince: summary.dispatchingSince?.toISOString() ?? null,
    done: summary.counts.blocked + summary.counts.pending + summary.outstanding + summary.counts.processing === 0,
    leader: leader && { ...leader, activeSince: leader.activeSince?.toISOString() ?? null, reportedAt: leader.reportedAt.toISOString() },
    services: { apis: seen("api"), leaders: seen("leader"), agents: seen("agent") },
    duties: {
      thisApi: duties.holder,
      heldByThisApi: duties.held(),
      leases: leases.map((l) => ({ ...l, since: l.since.toISOString(), expiresAt: l.expiresAt.toISOString() })),
    },
    deadLetters: { waiting: deadLetters, byService: deadByService, rejectedByThisApi: { ...stats.deadLettered } },
    reports: { applied: stats.applied, ignored: { ...stats.ignored } },
    publishes: { dispatched: stats.dispatched, republished: stats.republished, unconfirmed: stats.publishFailures, refused: stats.refused },
    broker: { connected: broker.connected, reconnects: broker.reconnects, hosts: { ...broker.hosts } },
    waitingForAgents: waiting.map((k) => ({ kind: k.kind, since: k.since.toISOString() })),
    schedules: { count: schedules.count, paused: schedules.paused, nextFireAt: schedules.nextFireAt?.toISOString() ?? null },
    workflows: { running: summary.workflowsRunning },
    retention: {
      setting: retention.text,
      retentionMs: retention.ms,
      pruned: pruned.pruned,
      prunedByThisApi: { ...stats.pruned },
      lastRunAt: pruned.lastRunAt?.toISOString() ?? null,
      lastRunBy: pruned.lastRunBy,
      due,
    },
  };
}

/** The backlog's shape as JSON writes it (GET / and GET /units). */
export const backlogView = (b: BacklogShape): StateView["backlog"] => ({ ...b, nextDueAt: b.nextDueAt?.toISOString() ?? null });

// The dead queue's depth, read at most once a second per broker however often GET / is
// polled and however many dashboards are open (each read opens a channel on the broker).
// Keyed by the broker, so each api in a process (the tests run several) has its own.
const deadDepths = new WeakMap<Broker, () => Promise<number | null>>();

function deadDepth(broker: Broker): Promise<number | null> {
  let read = deadDepths.get(broker);
  if (!read) {
    read = memoize(1_000, () => broker.inspectQueue(broker.topology.dead).then((q) => (q?.exists ? q.messages : null)));
    deadDepths.set(broker, read);
  }
  return read();
}

/** The last value of `fn` for `ttlMs`; concurrent callers share one call in flight. */
function memoize<T>(ttlMs: number, fn: () => Promise<T>): () => Promise<T> {
  let last: { at: number; value: Promise<T> } | null = null;
  return () => {
    if (last && Date.now() - last.at < ttlMs) return last.value;
    const value = fn();
    last = { at: Date.now(), value };
    // A failed read is not kept.
    value.catch(() => (last = null));
    return value;
  };
}
