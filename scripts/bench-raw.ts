/**
 * The raw limit `npm run bench` compares rtb with: the same units through the same three
 * hops (outbox -> jobs -> inbox) with plain amqplib, batched as rtb batches them, and nothing
 * else: no database, no validation. Each role is its own process, as rtb's services are
 * (bench-raw-role.ts): an "api" that publishes dispatch messages of rtb's size to outbox
 * and acks inbox a turn at a time, a "leader" that cuts each into jobs and reports them
 * queued in one message, and N "agents" that report each job's units processing and
 * success in a message each. Persistent messages, publisher confirms awaited together per
 * delivery, manual acks after them, rtb's prefetch: the best plain amqplib does with rtb's
 * messages, so that rtb's share of it says what its database and bookkeeping cost.
 */
import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { connect } from "amqplib";
import type { RawRoleCommand, RawRoleMessage, RawRoleSettings } from "./bench-raw-role.ts";
import { peakRssMiB } from "./bench-services.ts";

const roleScript = fileURLToPath(new URL("./bench-raw-role.ts", import.meta.url));

export interface RawOptions {
  url: string;
  prefix: string;
  queueType: "classic" | "quorum";
  units: number;
  agents: number;
  /** Deliveries in hand, as rtb's services have them. */
  leaderPrefetch: number;
  agentPrefetch: number;
  inboxPrefetch: number;
  /** Units awaiting their outbox confirm at once (rtb's bound: RTB_BROADCAST_MAX_QUEUE). */
  window: number;
  /** Units per outbox message (the api's dispatcher) and per job message (the leader's RTB_JOB_MAX_UNITS, a deep queue's size). */
  unitsPerMessage: number;
  jobUnits: number;
}

export interface RawResult {
  units: number;
  /** The batching it ran with (RawOptions). */
  unitsPerMessage: number;
  jobUnits: number;
  /** From the first outbox publish to the ack of the last unit's terminal report. */
  seconds: number;
  unitsPerSec: number;
  /** Messages published by every role, and per unit. */
  messages: number;
  messagesPerUnit: number;
  peakMemoryMiB: Record<string, number | null>;
}

/** The raw figure in a line: "5,432 units/s (plain amqplib, rtb's batching: 100 units per outbox message, 50 per job; 0.08 messages per unit)". */
export const rawLine = (r: RawResult) =>
  `${Math.round(r.unitsPerSec).toLocaleString("en")} units/s (plain amqplib, rtb's batching: ${r.unitsPerMessage} units per outbox message, ` +
  `${r.jobUnits} per job; ${r.messagesPerUnit.toFixed(2)} messages per unit)`;

const rawQueues = (prefix: string) => ({ outbox: `${prefix}raw.outbox`, jobs: `${prefix}raw.jobs`, inbox: `${prefix}raw.inbox` });

/** The raw processes running now, so that an interrupted bench can stop them. */
export const rawProcs = new Set<ChildProcess>();

export async function runRaw(o: RawOptions): Promise<RawResult> {
  const queues = rawQueues(o.prefix);
  const base = { url: o.url, queues, queueType: o.queueType };
  const roles: { name: string; settings: RawRoleSettings }[] = [
    { name: "leader", settings: { ...base, role: "leader", name: "leader", prefetch: o.leaderPrefetch, jobUnits: o.jobUnits } },
    ...Array.from({ length: o.agents }, (_, i) => ({ name: `agent-${i + 1}`, settings: { ...base, role: "agent" as const, name: `agent-${i + 1}`, prefetch: o.agentPrefetch } })),
    { name: "api", settings: { ...base, role: "api", name: "api", prefetch: o.inboxPrefetch, units: o.units, unitsPerMessage: o.unitsPerMessage, window: o.window } },
  ];
  const start = ({ name, settings }: (typeof roles)[number]) => {
    // fork: the same node with tsx, its own process group (a Ctrl-C reaches the bench only),
    // and an IPC channel that is both how it reports and its lifeline.
    const child = fork(roleScript, [JSON.stringify(settings)], { execArgv: ["--import", "tsx"], stdio: ["ignore", "inherit", "inherit", "ipc"], detached: true });
    rawProcs.add(child);
    child.on("exit", () => rawProcs.delete(child));
    const messages: RawRoleMessage[] = [];
    const waiters: (() => void)[] = [];
    child.on("message", (m: RawRoleMessage) => {
      messages.push(m);
      for (const w of waiters.splice(0)) w();
    });
    child.on("exit", () => {
      for (const w of waiters.splice(0)) w();
    });
    /** The next message of `type`; fails on a "failed" message or an exit. */
    const next = async <T extends RawRoleMessage["type"]>(type: T): Promise<Extract<RawRoleMessage, { type: T }>> => {
      for (;;) {
        const failed = messages.find((m) => m.type === "failed");
        if (failed?.type === "failed") throw new Error(`raw ${name}: ${failed.message}`);
        const m = messages.find((x) => x.type === type);
        if (m) return m as Extract<RawRoleMessage, { type: T }>;
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`raw ${name} exited (${child.signalCode ?? `code ${child.exitCode}`})`);
        await new Promise<void>((r) => waiters.push(r));
      }
    };
    const send = (c: RawRoleCommand) => child.send(c);
    return { name, child, next, send };
  };
  const procs: ReturnType<typeof start>[] = [];
  try {
    // The leader first, alone: it declares the three queues, and the others start once they
    // run. Declared by every role at once, RabbitMQ 3.10 could answer a declare of a quorum
    // queue still starting, and a consume on it then crashed the channel (541 INTERNAL_ERROR).
    procs.push(start(roles[0]!));
    await procs[0]!.next("ready");
    procs.push(...roles.slice(1).map(start));
    await Promise.all(procs.map((p) => p.next("ready")));
    const api = procs.at(-1)!;
    api.send({ type: "go" });
    // Whichever comes first: the api's report, or any role failing.
    const done = await Promise.race([api.next("done"), ...procs.slice(0, -1).map((p) => p.next("done"))]);
    const peakMemoryMiB = Object.fromEntries(procs.map((p) => [p.name, peakRssMiB(p.child.pid!)]));
    // The api is done once every unit's terminal and `queued` reports arrived: every role has
    // published all it will (a role's messages leave in order on its one publishing channel).
    for (const p of procs) p.send({ type: "count" });
    const messages = (await Promise.all(procs.map((p) => p.next("published")))).reduce((sum, m) => sum + m.messages, 0);
    return {
      units: o.units,
      unitsPerMessage: o.unitsPerMessage,
      jobUnits: o.jobUnits,
      seconds: done.seconds,
      unitsPerSec: o.units / done.seconds,
      messages,
      messagesPerUnit: messages / o.units,
      peakMemoryMiB,
    };
  } finally {
    await Promise.all(
      procs.map(async (p) => {
        if (p.child.exitCode !== null || p.child.signalCode !== null) return;
        const exited = new Promise((r) => p.child.once("exit", r));
        p.child.kill("SIGTERM");
        const timer = setTimeout(() => p.child.kill("SIGKILL"), 10_000);
        await exited;
        clearTimeout(timer);
      }),
    );
    await deleteRawQueues(o.url, o.prefix);
  }
}

/** Delete the raw path's queues (one short-lived channel each: deleting a missing queue closes it). */
export async function deleteRawQueues(url: string, prefix: string): Promise<void> {
  const conn = await connect(url).catch(() => null);
  if (!conn) return;
  for (const q of Object.values(rawQueues(prefix))) {
    const ch = await conn.createChannel().catch(() => null);
    if (!ch) continue;
    ch.on("error", () => {});
    await ch.deleteQueue(q).catch(() => {});
    await ch.close().catch(() => {});
  }
  await conn.close().catch(() => {});
}
