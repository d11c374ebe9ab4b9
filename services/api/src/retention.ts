import { asDuty, pruneBatch, pruneDue, type Db, type Pruned } from "@rtb/db";
import { PRUNE_DUE_CAP } from "@rtb/protocol";
import { sleep, type Duration, type Logger } from "@rtb/runtime";
import type { ApiStats } from "./stats.ts";
import type { Duties } from "./duties.ts";

export interface RetentionOptions {
  db: Db;
  logger: Logger;
  stats: ApiStats;
  /** RTB_RETENTION; 0 ms keeps everything (no pass ever runs). */
  retention: Duration;
  /** This api (RTB_API_ID), recorded as the one that ran the last pass. */
  apiId: string;
  /** Passes run only while this api holds the `retention` duty (its lease is checked in each batch's transaction). */
  duties: Pick<Duties, "holds" | "holder">;
  /** Units per transaction (default 1,000). */
  batchSize?: number;
  /** Pause between two batches of one pass (default 100 ms). */
  pauseMs?: number;
  /** Between passes (default: a tenth of the retention, within 1 s to 60 s). */
  everyMs?: number;
}

export interface Retention {
  /** One pass, as the timer runs it (exposed for tests): what this api pruned, or null when another replica holds the duty. */
  pass(): Promise<Pruned | null>;
  stop(): Promise<void>;
}

/**
 * The retention duty (db/src/retention.ts): on its own timer, a pass deletes finished units
 * past RTB_RETENTION, a batch per transaction, until a batch comes back short. Each batch is
 * one `asDuty(db, "retention")` transaction, run by the api holding the duty and fenced by its
 * lease (duties.ts), so across replicas one prunes at a time and the others skip their pass;
 * between batches the lock is free and a pause lets other work through, so no lock is held
 * for longer than one batch. When nothing is due, a pass costs one probe of the index of
 * finished units and one update of the `retention` row (its last run).
 */
export function startRetention(opts: RetentionOptions): Retention {
  const { db, logger, stats, retention } = opts;
  const batchSize = opts.batchSize ?? 1_000;
  const pauseMs = opts.pauseMs ?? 100;
  const everyMs = opts.everyMs ?? Math.min(60_000, Math.max(1_000, retention.ms / 10));
  const stopping = new AbortController();
  let current: Promise<Pruned | null> | null = null;

  async function run(): Promise<Pruned | null> {
    if (retention.ms === 0) return { units: 0, events: 0 };
    if (!opts.duties.holds("retention")) return null;
    const total = { units: 0, events: 0 };
    let ran = false;
    for (;;) {
      const batch = await asDuty(db, "retention", (trx) => pruneBatch(trx, { retentionMs: retention.ms, limit: batchSize, by: opts.apiId }), opts.duties.holder);
      if (!batch.ran) break;
      ran = true;
      total.units += batch.value.units;
      total.events += batch.value.events;
      stats.pruned.units += batch.value.units;
      stats.pruned.events += batch.value.events;
      if (batch.value.units < batchSize || stopping.signal.aborted) break;
      await sleep(pauseMs, stopping.signal);
    }
    if (total.units > 0) logger.info({ units: total.units, events: total.events, retention: retention.text }, "pruned finished units older than RTB_RETENTION");
    return ran ? total : null;
  }

  function pass(): Promise<Pruned | null> {
    current ??= run()
      .catch((err: unknown) => {
        logger.warn({ err }, "retention pass failed; the next one retries");
        return null;
      })
      .finally(() => (current = null));
    return current;
  }

  const loop =
    retention.ms === 0
      ? Promise.resolve()
      : (async () => {
          while (!stopping.signal.aborted) {
            await pass();
            await sleep(everyMs, stopping.signal);
          }
        })();

  return {
    pass,
    async stop() {
      stopping.abort();
      await loop;
      await current;
    },
  };
}

// The units due for pruning (GET /, rtb_prune_due_units), counted at most once a second per
// database however often GET / is polled or scraped: up to PRUNE_DUE_CAP index entries.
const dueCounts = new WeakMap<Db, { at: number; value: Promise<number> }>();

export function dueForPruning(db: Db, retentionMs: number): Promise<number> {
  const last = dueCounts.get(db);
  if (last && Date.now() - last.at < 1_000) return last.value;
  const value = pruneDue(db, retentionMs, PRUNE_DUE_CAP);
  dueCounts.set(db, { at: Date.now(), value });
  // A failed read is not kept.
  value.catch(() => dueCounts.delete(db));
  return value;
}
