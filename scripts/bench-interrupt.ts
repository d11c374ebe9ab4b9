/**
 * Ctrl-C during `npm run bench`: stop everything the bench started (the services with one
 * SIGTERM each, the raw path's processes) and drop the run's scratch place, then exit 130.
 * A second signal, a second or more after the first, kills what is left at once.
 */
import type { ChildProcess } from "node:child_process";
import { killAll, stopAll, type ServiceProc } from "./bench-services.ts";
import { rawProcs } from "./bench-raw.ts";

/** What the run in progress has started: registered by bench-run.ts as it goes. */
export const running = {
  services: [] as ServiceProc[],
  cleanups: [] as (() => Promise<void>)[],
  interrupted: false,
};

let firstAt = 0;

export function interrupt(signal: NodeJS.Signals, say: (msg: string) => void): void {
  const now = Date.now();
  if (!running.interrupted) {
    running.interrupted = true;
    firstAt = now;
    say(`${signal}: stopping the services and dropping the scratch place (again to force)`);
    void (async () => {
      const raws = [...rawProcs];
      await Promise.all([stopAll(running.services, 15_000), ...raws.map((c) => stopChild(c))]);
      for (const fn of running.cleanups.splice(0)) await fn().catch(() => {});
      process.exit(130);
    })();
  } else if (now - firstAt > 1_000) {
    // npm and tsx relay the terminal's signal a moment after the terminal sent it: only a
    // signal that comes later is a deliberate second request.
    say("forcing: killing what is left");
    for (const c of rawProcs) c.kill("SIGKILL");
    void killAll(running.services).then(() => process.exit(130));
  }
}

function stopChild(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve();
  const exited = new Promise<void>((r) => c.once("exit", () => r()));
  c.kill("SIGTERM");
  const timer = setTimeout(() => c.kill("SIGKILL"), 10_000);
  return exited.finally(() => clearTimeout(timer));
}
