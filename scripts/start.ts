/**
 * `npm start`: run the whole system locally, each service as its own process: the api, one
 * leader and RTB_AGENTS agents (default 2). Like compose's restart policy, a service that dies
 * is restarted with backoff; one that exits with code 2 (bad configuration) stops everything,
 * since restarting cannot fix it. Ctrl-C, SIGTERM or SIGHUP stops all services gracefully, and
 * so does npm exiting (killed by anything) when npm started this launcher.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { hostname } from "node:os";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { ConfigError, int, loadConfig, metricsConfig, onParentExit, type ListenAt } from "@rtb/runtime";

const root = fileURLToPath(new URL("..", import.meta.url));

let agents: number;
let metricsAt: ListenAt | undefined;
try {
  ({ RTB_AGENTS: agents, RTB_METRICS_PORT: metricsAt } = loadConfig(
    z.object({ RTB_AGENTS: int(2, { min: 0, max: 64 }), ...metricsConfig }),
    process.env,
  ));
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  console.error(`rtb start: ${err.message}`);
  process.exit(2);
}

interface Service {
  name: string;
  entry: string;
  env: Record<string, string>;
  child?: ChildProcess;
  restarts: number;
  startedAt: number;
  timer?: NodeJS.Timeout;
}

/**
 * RTB_METRICS_PORT for the n-th process that serves metrics (0 the leader, 1.. the agents):
 * one fixed port would let only the first of them listen, so each takes the next port up
 * (9464, 9465, ...), on the host given, or (a bare port) on the one the service picks
 * (metricsAddress: RTB_API_HOST's host, else 127.0.0.1). Port 0 (any free port) and unset pass
 * through as they are.
 */
const metricsPort = (n: number): Record<string, string> => {
  if (!metricsAt || metricsAt.port === 0) return {};
  const host = metricsAt.host === undefined ? "" : metricsAt.host.includes(":") ? `[${metricsAt.host}]:` : `${metricsAt.host}:`;
  return { RTB_METRICS_PORT: `${host}${metricsAt.port + n}` };
};

const services: Service[] = [
  // One id for every api the launcher restarts (the launcher's pid, not the api's): an api that
  // died takes its own duty leases back at once instead of waiting RTB_DUTY_LEASE_MS for them.
  { name: "api", entry: "services/api/src/main.ts", env: { RTB_API_ID: process.env.RTB_API_ID || `api-${hostname()}-${process.pid}` }, restarts: 0, startedAt: 0 },
  { name: "leader", entry: "services/leader/src/main.ts", env: { RTB_LEADER_ID: process.env.RTB_LEADER_ID ?? "leader-1", ...metricsPort(0) }, restarts: 0, startedAt: 0 },
  ...Array.from({ length: agents }, (_, i) => ({
    name: `agent-${i + 1}`,
    entry: "services/agent/src/main.ts",
    env: { RTB_AGENT_ID: `agent-${i + 1}`, ...metricsPort(i + 1) },
    restarts: 0,
    startedAt: 0,
  })),
];

let stopping = false;
let stopRequestedAt = 0;
let exitCode = 0;

const say = (msg: string) => console.log(`[start] ${msg}`);

function launch(s: Service) {
  s.startedAt = Date.now();
  // Each service gets its own process group, so a Ctrl-C reaches only this launcher, which
  // then sends exactly one SIGTERM to each service (a second signal would make it exit at once).
  const child = spawn(process.execPath, ["--import", "tsx", s.entry], {
    cwd: root,
    env: { ...process.env, ...s.env },
    // The IPC channel is a lifeline: if this launcher dies, even by SIGKILL, it closes and
    // the service stops by itself (see createLifecycle), so no service is left orphaned.
    stdio: ["inherit", "inherit", "inherit", "ipc"],
    detached: true,
  });
  s.child = child;
  say(`${s.name} started (pid ${child.pid})`);
  child.on("exit", (code, signal) => {
    s.child = undefined;
    if (stopping) {
      if (services.every((x) => !x.child)) finish();
      return;
    }
    if (code === 2) {
      say(`${s.name} exited with code 2 (invalid configuration): stopping everything`);
      exitCode = 2;
      stopAll();
      return;
    }
    // Back off 1s, 2s, 4s ... 30s; a service that stayed up a minute starts over at 1s.
    if (Date.now() - s.startedAt > 60_000) s.restarts = 0;
    const delay = Math.min(30_000, 1_000 * 2 ** s.restarts++);
    say(`${s.name} died (${signal ?? `exit code ${code}`}); restarting in ${delay / 1000}s (restart #${s.restarts})`);
    s.timer = setTimeout(() => launch(s), delay);
  });
}

function stopAll() {
  stopping = true;
  for (const s of services) {
    clearTimeout(s.timer);
    s.child?.kill("SIGTERM");
  }
  if (services.every((x) => !x.child)) finish();
}

function finish() {
  say(exitCode === 0 ? "all services stopped" : `stopped (exit code ${exitCode})`);
  process.exit(exitCode);
}

function onSignal(sig: NodeJS.Signals) {
  const now = Date.now();
  if (!stopping) {
    stopRequestedAt = now;
    say(`${sig}: stopping all services gracefully (press Ctrl-C again to force)`);
    stopAll();
  } else if (now - stopRequestedAt > 1_000) {
    // npm may relay the terminal's signal a moment after the terminal sent it: only a
    // signal that comes later is a deliberate second request.
    say("forcing all services to stop");
    for (const s of services) s.child?.kill("SIGKILL");
    exitCode = 130;
  }
}
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);
// The terminal went away (window closed, ssh dropped): stop as for Ctrl-C.
process.on("SIGHUP", onSignal);
// `npm start` runs this launcher as npm's own child (`exec` in the script: no shell between
// them, which would not relay npm's SIGTERM). npm relays SIGINT and SIGTERM; if npm itself
// dies (SIGKILL, or a SIGHUP it does not relay), stop as for Ctrl-C rather than run on.
if (process.env.npm_lifecycle_event !== undefined) {
  onParentExit(() => {
    if (stopping) return;
    stopRequestedAt = Date.now();
    say("npm exited: stopping all services gracefully");
    stopAll();
  });
}

say(`starting api, leader and ${agents} agent(s); Ctrl-C stops them`);
for (const s of services) launch(s);
