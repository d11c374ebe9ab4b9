import type { UnitAttempt } from "@rtb/protocol";

/**
 * The abort reason of a handler whose attempt an operator cancelled (`signal.reason`): the
 * agent then reports nothing for the attempt (the api recorded it as cancelled) and acks its job.
 */
export class UnitCancelledError extends Error {
  override name = "UnitCancelledError";
  constructor(unitId: number, attempt: number) {
    super(`unit ${unitId} attempt ${attempt} was cancelled`);
  }
}

/** Cancelled attempts remembered at most (the oldest are forgotten first), and for how long. */
const MAX_REMEMBERED = 100_000;
const REMEMBER_MS = 60 * 60 * 1000;

export interface Cancellations {
  /** Heard from the control exchange: remember these attempts, and abort their running handlers. */
  cancel(units: readonly UnitAttempt[]): void;
  /** Whether this attempt was cancelled (its job is dropped instead of run). */
  isCancelled(unitId: number, attempt: number): boolean;
  /** A job of this attempt is running: `abort` is called if it is cancelled. Returns the unregister. */
  track(unitId: number, attempt: number, abort: (reason: UnitCancelledError) => void): () => void;
  /** How many attempts are remembered now. */
  readonly size: number;
}

/**
 * What an agent knows of cancels: a bounded, expiring set of cancelled attempts (a job for one
 * of them that is still in the outbox or its job queue is dropped when it arrives), and the
 * running jobs by attempt (a cancel aborts them). Bounded by count and by age, so a flood of
 * cancels costs at most MAX_REMEMBERED entries; a job older than that which still arrives runs,
 * its `processing` report is ignored, and the api announces its cancel again (then it is aborted).
 */
export function createCancellations(opts: { maxRemembered?: number; rememberMs?: number; now?: () => number } = {}): Cancellations {
  const max = opts.maxRemembered ?? MAX_REMEMBERED;
  const ttl = opts.rememberMs ?? REMEMBER_MS;
  const now = opts.now ?? Date.now;
  /** key -> when it is forgotten; in insertion order, so the first entries are the oldest. */
  const remembered = new Map<string, number>();
  const running = new Map<string, Set<(reason: UnitCancelledError) => void>>();
  const key = (unitId: number, attempt: number) => `${unitId}:${attempt}`;

  function forgetExpired() {
    const t = now();
    for (const [k, until] of remembered) {
      if (until > t) break;
      remembered.delete(k);
    }
  }

  return {
    cancel(units) {
      forgetExpired();
      for (const u of units) {
        const k = key(u.unitId, u.attempt);
        remembered.delete(k);
        remembered.set(k, now() + ttl);
        if (remembered.size > max) remembered.delete(remembered.keys().next().value!);
        for (const abort of running.get(k) ?? []) abort(new UnitCancelledError(u.unitId, u.attempt));
      }
    },
    isCancelled(unitId, attempt) {
      forgetExpired();
      return remembered.has(key(unitId, attempt));
    },
    track(unitId, attempt, abort) {
      const k = key(unitId, attempt);
      let set = running.get(k);
      if (!set) running.set(k, (set = new Set()));
      set.add(abort);
      return () => {
        set.delete(abort);
        if (set.size === 0 && running.get(k) === set) running.delete(k);
      };
    },
    get size() {
      return remembered.size;
    },
  };
}
