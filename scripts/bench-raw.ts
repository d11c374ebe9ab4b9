/**
 * The raw limit `npm run bench` compares rtb with: the same number of persistent messages
 * through the same three hops (outbox -> jobs -> inbox) with plain amqplib, publisher
 * confirms and manual acks, and nothing else: no database, no validation, no status
 * messages besides the one per unit. Each role is its own process, as rtb's services are
 * (bench-raw-role.ts): an "api" that publishes to outbox and acks inbox, a "leader" that
 * moves outbox to jobs, and N "agents" that move jobs to inbox.
 */
import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { connect } from "amqplib";
import type { RawRoleMessage, RawRoleSettings } from "./bench-raw-role.ts";
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
  /** Outbox messages awaiting their confirm at once (rtb's bound: RTB_BROADCAST_MAX_QUEUE). */
  window: number;
}

export interface RawResult {
  units: number;
  seconds: number;
  msgsPerSec: number;
  peakMemoryMiB: Record<string, number | null>;
}

const rawQueues = (prefix: string) => ({ outbox: `${prefix}raw.outbox`, jobs: `${prefix}raw.jobs`, inbox: `${prefix}raw.inbox` });

/** The raw processes running now, so that an interrupted bench can stop them. */
export const rawProcs = new Set<ChildProcess>();

export async function runRaw(o: RawOptions): Promise<RawResult> {
  const queues = rawQueues(o.prefix);
  const base = { url: o.url, queues, queueType: o.queueType };
  const roles: { name: string; settings: RawRoleSettings }[] = [
    { name: "leader", settings: { ...base, role: "leader", prefetch: o.leaderPrefetch } },
    ...Array.from({ length: o.agents }, (_, i) => ({ name: `agent-${i + 1}`, settings: { ...base, role: "agent" as const, prefetch: o.agentPrefetch } })),
    { name: "api", settings: { ...base, role: "api", prefetch: o.inboxPrefetch, units: o.units, window: o.window } },
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
    return { name, child, next };
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
    api.child.send({ type: "go" });
    // Whichever comes first: the api's report, or any role failing.
    const done = await Promise.race([api.next("done"), ...procs.slice(0, -1).map((p) => p.next("done"))]);
    const peakMemoryMiB = Object.fromEntries(procs.map((p) => [p.name, peakRssMiB(p.child.pid!)]));
    return { units: o.units, seconds: done.seconds, msgsPerSec: o.units / done.seconds, peakMemoryMiB };
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
