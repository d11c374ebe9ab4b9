import { UNIT_STATUSES, type StateView } from "@rtb/protocol";
import type { Command, Context } from "../command.ts";
import { ago, count, duration, timestamp } from "../format.ts";
import { fields, paintStatus, table } from "../output.ts";

export const status: Command = {
  name: "status",
  summary: "the state of things: counts per status, dispatching, leader, agents, dead letters, kinds waiting for an agent",
  usage: "rtb status [--json]",
  help: "  --json   GET / exactly as the api answers it",
  options: {},
  positionals: { min: 0, max: 0 },
  async run(ctx) {
    const state = await ctx.api().get<StateView>("/");
    if (ctx.json) return ctx.out.json(state);
    renderStatus(ctx, state);
  },
};

function renderStatus({ out }: Context, s: StateView): void {
  const now = Date.now();
  const rows = UNIT_STATUSES.map((st) => [paintStatus(out, st), count(s.counts[st] ?? 0)]);
  rows.push([out.paint("total", "bold"), count(s.total)]);
  table(out, [{ header: "status" }, { header: "units", align: "right" }], rows);
  out.line();

  const dispatching = s.dispatching ? out.paint("on", "green") : out.paint("paused", "yellow");
  const leader = s.leader
    ? `${s.leader.id} (active since ${ago(s.leader.activeSince, now)}, last report ${ago(s.leader.reportedAt, now)})`
    : out.paint("none has reported yet", "dim");
  const names = (list: { id: string }[]) => (list.length ? `${list.length}: ${list.map((i) => i.id).join(", ")}` : "0");
  const dead = s.deadLetters;
  const byService = Object.entries(dead.byService)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${k} ${count(n)}`)
    .join(", ");
  fields(out, [
    ["dispatching", `${dispatching}${s.dispatchingSince ? ` (since ${ago(s.dispatchingSince, now)})` : ""}`],
    ["outstanding", `${count(s.outstanding)} / ${count(s.maxQueue)} (dispatched + queued / RTB_BROADCAST_MAX_QUEUE)`],
    ["backlog", backlogLine(s, now)],
    ["done", s.done ? out.paint("yes: nothing blocked, pending or in flight", "green") : "no"],
    ["workflows", `${count(s.workflows.running)} running${s.workflows.running > 0 ? " (rtb workflows --status running)" : ""}`],
    ["leader", leader],
    ["apis", names(s.services.apis)],
    ["duties", dutiesLine(s)],
    ["leaders", names(s.services.leaders)],
    ["agents", names(s.services.agents)],
    ["dead letters", `${dead.waiting === null ? "?" : count(dead.waiting)} waiting${byService ? ` (dead-lettered by ${byService})` : ""}`],
    ["broker", s.broker.connected ? `connected to ${brokerHosts(s.broker.hosts)} (${s.broker.reconnects} reconnects)` : out.paint("disconnected", "red")],
  ]);

  const kinds = Object.entries(s.leader?.utilization?.kinds ?? {});
  if (kinds.length > 0) {
    out.line();
    table(
      out,
      [{ header: "kind" }, { header: "jobs waiting", align: "right" }, { header: "agents", align: "right" }],
      kinds.map(([kind, u]) => [kind, count(u.ready), count(u.consumers)]),
    );
  }

  // Kinds no agent consumes: their units wait, without using attempts, for one to start.
  if (s.waitingForAgents.length > 0) {
    out.line();
    table(
      out,
      [{ header: "kind without an agent" }, { header: "units waiting since" }],
      s.waitingForAgents.map((w) => [out.paint(w.kind, "yellow"), `${timestamp(w.since)} (${ago(w.since, now)})`]),
    );
  }
}

/** Who holds the duties done once across api replicas: "reconciler, schedules, retention, tallies: api-1". */
function dutiesLine(s: StateView): string {
  if (s.duties.leases.length === 0) return "none held yet";
  const byHolder = new Map<string, string[]>();
  for (const l of s.duties.leases) {
    const who = l.holder ?? `nobody (${l.lastHolder}'s lease ran out)`;
    byHolder.set(who, [...(byHolder.get(who) ?? []), l.duty]);
  }
  return [...byHolder].map(([who, duties]) => `${duties.join(", ")}: ${who}`).join("; ");
}

/** What the pending units wait for: nothing, a clock (and when the first is due), an agent. */
function backlogLine(s: StateView, now: number): string {
  const { ready, onClock, forAgents, nextDueAt } = s.backlog;
  const due = nextDueAt ? ` (next due ${Date.parse(nextDueAt) <= now ? "now" : `in ${duration(Date.parse(nextDueAt) - now)}`})` : "";
  return `${count(ready)} ready, ${count(onClock)} on a clock${due}, ${count(forAgents)} waiting for an agent`;
}

/**
 * Where the api's two broker connections are: one host, or each when they differ (after a
 * failover in a cluster each moves on its own). An api older than the field shows none.
 */
function brokerHosts(hosts: StateView["broker"]["hosts"] | undefined): string {
  if (!hosts) return "?";
  if (hosts.consume === hosts.publish) return hosts.consume ?? "?";
  return `${hosts.consume ?? "(down)"} (consume), ${hosts.publish ?? "(down)"} (publish)`;
}
