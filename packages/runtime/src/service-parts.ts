import type { Logger } from "pino";
import { budget } from "./shutdown.ts";

/** The time a stop step may take: `left(reserveMs)` keeps `reserveMs` for the steps after it. */
export type TimeLeft = (reserveMs?: number) => number;

export interface ServiceParts {
  /** Right after a part started: how to stop it. Steps run last added first. */
  add(name: string, stop: (left: TimeLeft) => unknown): void;
  /**
   * Stop every part, in reverse start order, within RTB_SHUTDOWN_TIMEOUT_MS (each step bounds
   * its own wait with `within(..., left())`). A failing step is logged and the rest still run;
   * a second call waits for the first.
   */
  stop(): Promise<void>;
}

/**
 * The ordered start and reverse stop every service (api, leader, agent) does. `startService`
 * builds the parts; if building throws, what was already started is stopped before the error
 * goes on, so a failed start leaves no connection or timer behind.
 */
export async function startService<T extends object>(
  logger: Logger,
  shutdownTimeoutMs: number,
  build: (parts: ServiceParts) => Promise<T>,
): Promise<T & { stop(): Promise<void> }> {
  const steps: { name: string; stop: (left: TimeLeft) => unknown }[] = [];
  let stopping: Promise<void> | undefined;
  const parts: ServiceParts = {
    add: (name, stop) => void steps.push({ name, stop }),
    stop: () =>
      (stopping ??= (async () => {
        const { left } = budget(shutdownTimeoutMs);
        for (const step of steps.toReversed()) {
          try {
            await step.stop(left);
          } catch (err) {
            logger.warn({ err, step: step.name }, "stop step failed");
          }
        }
      })()),
  };
  try {
    const built = await build(parts);
    return { ...built, stop: parts.stop };
  } catch (err) {
    await parts.stop();
    throw err;
  }
}
