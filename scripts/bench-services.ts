/**
 * The services of one `npm run bench` run, as real processes: `node --import tsx <entry>`
 * started directly (not through the `tsx` binary, which runs the service in a child
 * process), so the pid we hold is the process that runs the service and its
 * /proc/<pid>/status is the service's memory.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";

export interface ServiceProc {
  readonly name: string;
  readonly pid: number;
  readonly child: ChildProcess;
  readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  running(): boolean;
  /** Resolves with the first log line whose msg matches `ready`; rejects if the process exits first. */
  readonly ready: Promise<Record<string, unknown>>;
  /** The URL of its GET /metrics, once it logged `metrics listening` (leader, agents). */
  metricsUrl(): string | undefined;
  /** The last lines it wrote (stdout and stderr), for a message when something fails. */
  tail(): string;
}

export const entries = { api: "services/api/src/main.ts", leader: "services/leader/src/main.ts", agent: "services/agent/src/main.ts" } as const;
const readyMsg = { api: /^api listening/, leader: /^leader ready/, agent: /^agent ready/ } as const;

/**
 * Start one service of the checkout at `root`. Its own process group, so a Ctrl-C in the
 * terminal reaches only the bench, which then sends each service exactly one SIGTERM (a
 * second signal makes a service exit at once). The IPC channel is a lifeline: if the bench
 * dies, even by SIGKILL, it closes and the service stops by itself (createLifecycle).
 */
/**
 * What every service of a bench run is started with: this process's environment (other RTB_*
 * variables reach the services), the run's database and broker names, an api on a free port
 * with no seed, the outbox bound, and info-level JSON logs (the ready lines say where each
 * service listens). `extra` adds or overrides.
 */
export function benchServiceEnv(run: { dbName: string; prefix: string; maxQueue: number }, extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...(process.env as Record<string, string>),
    RTB_DB_NAME: run.dbName,
    RTB_BROKER_PREFIX: run.prefix,
    RTB_API_HOST: "127.0.0.1:0",
    RTB_SEED_UNITS: "0",
    RTB_BROADCAST_MAX_QUEUE: String(run.maxQueue),
    RTB_LOG_LEVEL: "info",
    RTB_LOG_FORMAT: "json",
    ...extra,
  };
}

export function startService(root: string, name: string, kind: keyof typeof entries, env: Record<string, string>): ServiceProc {
  // RTB_BENCH_CPU_PROF=DIR: each service writes V8 CPU profiles into DIR/<name>/ when it exits
  // (one per thread; the largest is the service's own, the others tsx's loader), for Chrome's
  // DevTools or speedscope: where the time goes, measured.
  const profile = process.env.RTB_BENCH_CPU_PROF ? ["--cpu-prof", `--cpu-prof-dir=${join(process.env.RTB_BENCH_CPU_PROF, name)}`] : [];
  const child = spawn(process.execPath, [...profile, "--import", "tsx", join(root, entries[kind])], {
    cwd: root,
    env,
    stdio: ["ignore", "pipe", "pipe", "ipc"],
    detached: true,
  });
  const lines: string[] = [];
  let metricsUrl: string | undefined;
  let exited = false;
  let onReady: (line: Record<string, unknown>) => void = () => {};
  let onFail: (err: Error) => void = () => {};
  const ready = new Promise<Record<string, unknown>>((resolve, reject) => {
    onReady = resolve;
    onFail = reject;
  });
  ready.catch(() => {}); // a caller that stopped waiting must not see an unhandled rejection
  let partial = "";
  const take = (chunk: Buffer) => {
    const text = partial + chunk.toString();
    const parts = text.split("\n");
    partial = parts.pop() ?? "";
    for (const line of parts) {
      lines.push(line);
      if (lines.length > 200) lines.shift();
      // Only the lines we look for are parsed: a busy service logs a lot, and this process
      // shares the machine with the ones it measures.
      if (!line.startsWith("{") || !/"msg":"(api listening|leader ready|agent ready|metrics listening)/.test(line)) continue;
      try {
        const rec = JSON.parse(line) as Record<string, unknown>;
        // An api serves its metrics on its HTTP listener.
        if (rec.msg === "api listening" && typeof rec.url === "string") metricsUrl = `${rec.url.replace(/\/$/, "")}/metrics`;
        if (rec.msg === "metrics listening" && typeof rec.url === "string") metricsUrl = rec.url.endsWith("/metrics") ? rec.url : `${rec.url.replace(/\/$/, "")}/metrics`;
        if (typeof rec.msg === "string" && readyMsg[kind].test(rec.msg)) onReady(rec);
      } catch {
        // not a whole JSON record: not one of ours
      }
    }
  };
  child.stdout!.on("data", take);
  child.stderr!.on("data", take);
  child.on("error", (err) => onFail(err));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("exit", (code, signal) => {
      exited = true;
      onFail(new Error(`${name} exited (${signal ?? `code ${code}`}) before it was ready; its last lines:\n${[...lines, partial].slice(-40).join("\n")}`));
      resolve({ code, signal });
    }),
  );
  return {
    name,
    pid: child.pid!,
    child,
    exit,
    running: () => !exited,
    ready,
    metricsUrl: () => metricsUrl,
    tail: () => [...lines, partial].slice(-40).join("\n"),
  };
}

/** Wait for `p` to be ready, failing after `timeoutMs` with its last lines. */
export async function readyWithin(p: ServiceProc, timeoutMs: number): Promise<Record<string, unknown>> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${p.name} was not ready within ${timeoutMs / 1000} s; its last lines:\n${p.tail()}`)), timeoutMs);
  });
  try {
    return await Promise.race([p.ready, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** SIGTERM each process still running and wait for it; SIGKILL what is still there after `graceMs`. */
export async function stopAll(procs: readonly ServiceProc[], graceMs = 20_000): Promise<void> {
  await Promise.all(
    procs.map(async (p) => {
      if (!p.running()) return;
      p.child.kill("SIGTERM");
      let timer: NodeJS.Timeout | undefined;
      const killed = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          p.child.kill("SIGKILL");
          resolve();
        }, graceMs);
      });
      await Promise.race([p.exit, killed]);
      clearTimeout(timer);
      await p.exit;
    }),
  );
}

/** SIGKILL each process still running (a second Ctrl-C), and wait for them. */
export async function killAll(procs: readonly ServiceProc[]): Promise<void> {
  for (const p of procs) if (p.running()) p.child.kill("SIGKILL");
  await Promise.all(procs.map((p) => p.exit));
}

/**
 * The peak resident set size of a process (VmHWM in /proc/<pid>/status), in MiB; null where
 * /proc is not there (not Linux) or the process is gone.
 */
export function peakRssMiB(pid: number): number | null {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}
