import type { Logger } from "pino";

/**
 * Process lifecycle: SIGTERM/SIGINT/SIGHUP abort the returned signal and run the stop
 * functions in reverse start order; a second signal exits at once (but not one within a second
 * of the first: a terminal's Ctrl-C reaches npm and its child, and npm relays it too). Exits 0
 * after a clean stop. Whoever started the process going away stops it too: a launcher's IPC
 * channel closing (npm start), or, with `watchParent` (started by `npm run`), the parent
 * process exiting, whatever killed it.
 */
export interface Lifecycle {
  readonly signal: AbortSignal;
  /** Register a stop step; steps run in reverse registration order. */
  onStop(name: string, fn: () => Promise<void> | void): void;
  /** Stop everything and exit with `code`. */
  shutdown(code: number, reason: string): Promise<never>;
}

export function createLifecycle(logger: Logger, timeoutMs: number, { watchParent = false } = {}): Lifecycle {
  const controller = new AbortController();
  const steps: { name: string; fn: () => Promise<void> | void }[] = [];
  let shuttingDown = false;
  let firstSignalAt = 0;

  function onSignal(sig: NodeJS.Signals) {
    if (shuttingDown && Date.now() - firstSignalAt < 1_000) return;
    firstSignalAt ||= Date.now();
    void shutdown(0, sig);
  }

  async function shutdown(code: number, reason: string): Promise<never> {
    if (shuttingDown) {
      logger.warn({ reason }, "second stop request: exiting now");
      process.exit(code || 1);
    }
    shuttingDown = true;
    logger.info({ reason }, "stopping");
    controller.abort();
    const hardStop = setTimeout(() => {
      logger.error({ timeoutMs }, "shutdown did not finish in time; exiting");
      process.exit(1);
    }, timeoutMs + 2_000);
    hardStop.unref();
    for (const step of [...steps].reverse()) {
      try {
        await step.fn();
      } catch (err) {
        logger.warn({ err, step: step.name }, "stop step failed");
      }
    }
    logger.info({ code }, "stopped");
    logger.flush?.();
    // Let the log transport write out before exiting.
    await new Promise((r) => setTimeout(r, 50));
    process.exit(code);
  }

  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"] as const) process.on(sig, onSignal);
  // Started by a launcher with an IPC channel (npm start): its end closing means the launcher
  // is gone, whatever killed it. Stop gracefully rather than run on as an orphan.
  if (process.send) process.on("disconnect", () => void shutdown(0, "launcher exited"));
  else if (watchParent) onParentExit(() => void shutdown(0, "parent exited"));
  process.on("unhandledRejection", (err) => {
    logger.fatal({ err }, "unhandled rejection");
    void shutdown(1, "unhandledRejection");
  });

  return {
    signal: controller.signal,
    onStop: (name, fn) => void steps.push({ name, fn }),
    shutdown,
  };
}

/**
 * Call `onGone` once this process's parent has exited (the process was re-parented, so
 * `process.ppid` changed), checked every `everyMs`. For processes run by `npm run`: npm killed
 * by SIGKILL, or by a SIGHUP it does not relay, must not leave them running as orphans.
 */
export function onParentExit(onGone: () => void, everyMs = 500): () => void {
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(timer);
    onGone();
  }, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}

/** Retry `fn` with exponential backoff and jitter until it succeeds or `deadlineMs` passes. */
export async function retryUntil<T>(
  fn: () => Promise<T>,
  opts: { deadlineMs: number; signal?: AbortSignal; onRetry: (err: unknown, attempt: number, delayMs: number) => void },
): Promise<T> {
  const started = Date.now();
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const delay = Math.min(10_000, 250 * 2 ** (attempt - 1)) * (0.8 + Math.random() * 0.4);
      if (opts.signal?.aborted || Date.now() - started + delay > opts.deadlineMs) throw err;
      opts.onRetry(err, attempt, Math.round(delay));
      await sleep(delay, opts.signal);
    }
  }
}

/** A sleep that ends early (without throwing) when the signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * Wait for `p`, but no longer than `ms`: stop steps use it so that a blocked broker or
 * database cannot hold a shutdown past RTB_SHUTDOWN_TIMEOUT_MS. Resolves `false` on timeout.
 */
export async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const done = await Promise.race([
    p.then(
      () => true,
      () => true,
    ),
    new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), Math.max(0, ms)))),
  ]);
  clearTimeout(timer);
  return done;
}

/**
 * A shutdown's time budget. Stop steps that wait for work in hand take `left() - reserve`,
 * so the steps after them (flush confirms, close connections) still fit in RTB_SHUTDOWN_TIMEOUT_MS.
 */
export function budget(ms: number): { left(reserveMs?: number): number } {
  const end = Date.now() + ms;
  return { left: (reserveMs = 0) => Math.max(0, end - Date.now() - reserveMs) };
}
