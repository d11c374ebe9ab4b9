import { performance } from "node:perf_hooks";
import { claimDuties, releaseDuties, DUTIES, type Db, type Duty } from "@rtb/db";
import type { Logger } from "@rtb/runtime";

export interface Duties {
  /** This api's id in the leases (RTB_API_ID): asDuty's `holder`, which fences a pass in its transaction. */
  readonly holder: string;
  /**
   * Whether this api holds `duty`: its last claim got it, and the lease has not run out since,
   * by this host's clock, counted from before that claim was sent (so never later than the
   * database's expiry). A claim that fails (the database away) lets the leases lapse.
   */
  holds(duty: Duty): boolean;
  /** The duties held now. */
  held(): Duty[];
  /** Claim (take or renew) now, as the timer does every third of the lease. */
  claim(): Promise<Duty[]>;
  /** Stop renewing and give the leases up, so another api takes them at its next claim. */
  stop(): Promise<void>;
}

/**
 * This api's share of the work done once across replicas (db/src/duties.ts): claims every duty
 * it can at start and every RTB_DUTY_LEASE_MS / 3, renewing its own; another api's leases are
 * taken only once they have expired (that api died, or lost the database for a whole lease).
 * `onGained` hears of the duties newly taken, so their work starts at once (the scheduler
 * looks again) instead of at its next tick. Every api claims every duty: the first to start
 * holds them all, and when it goes, the first to look after its leases end takes them.
 */
export async function startDuties(opts: { db: Db; logger: Logger; holder: string; leaseMs: number; onGained?: (duties: Duty[]) => void }): Promise<Duties> {
  const { db, logger, holder, leaseMs } = opts;
  let validUntil = 0;
  let mine = new Set<Duty>();
  let stopped = false;
  let current: Promise<Duty[]> | null = null;

  const holds = (duty: Duty) => mine.has(duty) && performance.now() < validUntil;

  async function claimOnce(): Promise<Duty[]> {
    const sentAt = performance.now();
    let got: Duty[];
    try {
      got = await claimDuties(db, holder, leaseMs);
    } catch (err) {
      // The leases lapse by themselves (holds() counts the time); the next claim retries.
      if (mine.size > 0) logger.warn({ err, duties: [...mine] }, "cannot renew this api's duty leases; they lapse unless the next claim gets through");
      return DUTIES.filter(holds);
    }
    if (stopped) return [];
    const before = new Set(DUTIES.filter(holds));
    mine = new Set(got);
    validUntil = sentAt + leaseMs;
    const gained = got.filter((d) => !before.has(d));
    const lost = [...before].filter((d) => !mine.has(d));
    if (gained.length > 0) logger.info({ duties: gained, holder }, "took duties done once across api replicas");
    if (lost.length > 0) logger.warn({ duties: lost, holder }, "lost duties to another api (a lease ran out before it was renewed)");
    if (gained.length > 0) opts.onGained?.(gained);
    return got;
  }

  function claim(): Promise<Duty[]> {
    current ??= claimOnce().finally(() => (current = null));
    return current;
  }

  await claim();
  const timer = setInterval(() => void claim(), Math.max(100, Math.floor(leaseMs / 3)));
  timer.unref?.();

  return {
    holder,
    holds,
    held: () => DUTIES.filter(holds),
    claim,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await current;
      mine = new Set();
      try {
        await releaseDuties(db, holder);
      } catch (err) {
        logger.warn({ err }, "could not give up this api's duty leases; they expire by themselves");
      }
    },
  };
}
