import { Webhook } from "standardwebhooks";
import { claimCallbacks, markDelivered, markFailed, pendingCallbacks, type ClaimedCallback, type Db } from "@rtb/db";
import { Counter, Gauge, Histogram, type Logger, type Registry } from "@rtb/runtime";
import { callbackUrlProblem, type AllowedHost } from "./callback-policy.ts";

/**
 * The delivery loop of completion callbacks (migration 0013): claims due deliveries (FOR UPDATE
 * SKIP LOCKED, so api replicas share them without a duty), POSTs each, signed, with at most
 * `concurrency` requests open (`hostConcurrency` to one host, so a slow receiver leaves slots to
 * the others), and settles it: delivered on a 2xx, else retried after an
 * exponential backoff with jitter, given up after `maxAttempts`. It runs beside the inbox and
 * never inside its transactions: status application only writes the row (the trigger), and
 * this loop holds no connection while a request is open (a claim, then one update per answer).
 *
 * It runs with callbacks off too (no allowed host), sending nothing: the trigger still writes
 * deliveries for units of groups that kept a URL from before, and each attempt of those fails
 * ("callbacks are off") on the usual backoff until RTB_WEBHOOK_MAX_ATTEMPTS gives it up. Turned
 * on again within that window, they go out; and none stays pending for ever (retention keeps a
 * unit while a delivery of it is pending).
 */
export interface CallbackSettings {
  /** RTB_WEBHOOK_ALLOWED_HOSTS; empty: callbacks are off. */
  allowed: readonly AllowedHost[];
  /** RTB_WEBHOOK_SECRET (whsec_...); the config requires it when a host is allowed. */
  secret: string | undefined;
  maxAttempts: number;
  timeoutMs: number;
  concurrency: number;
  /** Of those, at most this many to one host (RTB_WEBHOOK_HOST_CONCURRENCY). */
  hostConcurrency: number;
  backoffMs: number;
  backoffMaxMs: number;
  /** How often it looks for due deliveries when nothing woke it. */
  pollMs?: number;
}

export interface CallbackDeliverer {
  /** Look for due deliveries now (units just ended). */
  wake(): void;
  stop(): Promise<void>;
}

/** An attempt's end: the 2xx status that delivered it, or why not (final: give up now). */
type Outcome = { delivered: number } | { statusCode?: number; error: string; final?: boolean };

/** Why every attempt fails while no host is allowed. */
const OFF = "callbacks are off: RTB_WEBHOOK_ALLOWED_HOSTS is empty";

/** Bytes of an answer read at most (kept in the failed attempt's error); the rest is never read. */
export const MAX_ANSWER_BYTES = 1024;
/** Blocks of HOSTS_PER_CLAIM hosts one turn of the loop may go through while slots stay free. */
const BLOCKS_PER_FILL = 5;
/** A claim's lease beyond the request's timeout: a claimer that died is replaced after this. */
const LEASE_MARGIN_MS = 5_000;

export function startCallbackDeliverer(deps: { db: Db; logger: Logger; registry: Registry; settings: CallbackSettings }): CallbackDeliverer {
  const { db, settings } = deps;
  const logger = deps.logger.child({ part: "callbacks" });
  const webhook = settings.allowed.length > 0 && settings.secret !== undefined ? new Webhook(settings.secret) : null;
  const metrics = callbackMetrics(deps.registry, db);
  const stopping = new AbortController();
  const running = new Set<Promise<void>>();
  /** Open requests by host (ClaimedCallback.host), for the per-host cap. */
  const perHost = new Map<string, number>();
  /** Where the next claim starts among the hosts, past HOSTS_PER_CLAIM of them (claimCallbacks). */
  let after: string | null = null;
  /** The claim loop running now, if any (stop waits for it). */
  let claiming: Promise<void> | null = null;
  let again = false;

  function fill(): Promise<void> {
    if (claiming) {
      again = true;
      return claiming;
    }
    claiming = claimLoop().finally(() => (claiming = null));
    return claiming;
  }

  async function claimLoop(): Promise<void> {
    try {
      // Blocks of HOSTS_PER_CLAIM hosts gone through in this turn: past the first, only while
      // slots stay free, and at most BLOCKS_PER_FILL (the cursor goes on at the next turn).
      let blocks = 0;
      do {
        again = false;
        const free = settings.concurrency - running.size;
        if (free <= 0 || stopping.signal.aborted) break;
        const claim = await claimCallbacks(db, free, settings.timeoutMs + LEASE_MARGIN_MS, { perHost: settings.hostConcurrency, inFlight: perHost, after });
        after = claim.after;
        for (const c of claim.claimed) start(c);
        if (after !== null && claim.claimed.length < free && ++blocks < BLOCKS_PER_FILL) again = true;
        // A full claim: more may be due once a slot frees (each delivery's end calls fill).
      } while (again && !stopping.signal.aborted);
    } catch (err) {
      logger.warn({ err: (err as Error).message }, "callbacks: cannot claim deliveries; trying again at the next poll");
    }
  }

  function start(c: ClaimedCallback): void {
    perHost.set(c.host, (perHost.get(c.host) ?? 0) + 1);
    const p: Promise<void> = deliver(c)
      .catch((err: unknown) => logger.warn({ err: (err as Error).message, unitId: c.unitId, webhookId: c.webhookId }, "callbacks: cannot record a delivery's outcome; it is claimed again once its lease ends"))
      .finally(() => {
        running.delete(p);
        const left = (perHost.get(c.host) ?? 1) - 1;
        if (left > 0) perHost.set(c.host, left);
        else perHost.delete(c.host);
        if (!stopping.signal.aborted) void fill();
      });
    running.add(p);
  }

  async function deliver(c: ClaimedCallback): Promise<void> {
    const log = logger.child({ unitId: c.unitId, webhookId: c.webhookId, attempt: c.attempt });
    // The setting may have changed since the URL was accepted: a host no longer allowed gives
    // the delivery up at once; callbacks off retries it as any failure (see above).
    let outcome: Outcome;
    if (!webhook) outcome = { error: OFF };
    else {
      const problem = callbackUrlProblem(settings.allowed, c.url);
      outcome = problem ? { error: problem, final: true } : await send(webhook, c);
    }
    if ("delivered" in outcome) {
      // Outside the request's try: a database error here is not the receiver's failure. It
      // throws (logged by start), leaving the row pending, sent again once the lease lapses.
      // Not updated: a claimer whose lease lapsed answered after another settled the row.
      if (!(await markDelivered(db, c, outcome.delivered))) {
        log.info("callback answered 2xx after another claim settled it (this claim's lease had lapsed)");
        return;
      }
      metrics.outcomes.inc({ outcome: "delivered" });
      metrics.latency.observe(Math.max(0, (Date.now() - c.createdAt.getTime()) / 1000));
      log.debug("callback delivered");
      return;
    }
    if (stopping.signal.aborted) {
      // Cut off by the stop: its lease lets another api (or this one restarted) send it again.
      return;
    }
    const giveUp = outcome.final || c.attempt >= settings.maxAttempts;
    const retryInMs = backoff(c.attempt, settings);
    const settled = await markFailed(db, c, outcome, { retryInMs, giveUp });
    if (!settled) return;
    metrics.outcomes.inc({ outcome: giveUp ? "given_up" : "failed" });
    if (giveUp) log.warn({ error: outcome.error, statusCode: outcome.statusCode, url: c.url }, "callback given up");
    else log.info({ error: outcome.error, statusCode: outcome.statusCode, retryInMs }, "callback attempt failed; retrying");
  }

  /** One request: the 2xx status that delivered it, or why not. */
  async function send(webhook: Webhook, c: ClaimedCallback): Promise<Outcome> {
    const id = c.webhookId;
    const body = JSON.stringify(c.body);
    // A fresh timestamp per attempt: receivers refuse old ones (5 minutes, by the standard's libraries).
    const at = new Date();
    const timeout = AbortSignal.timeout(settings.timeoutMs);
    try {
      const res = await fetch(c.url, {
        method: "POST",
        body,
        headers: {
          "content-type": "application/json",
          "user-agent": "rtb-callbacks",
          "webhook-id": id,
          "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
          "webhook-signature": webhook.sign(id, at, body),
        },
        // A redirect is an answer, not followed: it could point anywhere, past the allowed hosts.
        redirect: "manual",
        signal: AbortSignal.any([timeout, stopping.signal]),
      });
      if (res.status >= 200 && res.status < 300) {
        await res.body?.cancel().catch(() => {});
        return { delivered: res.status };
      }
      const text = await readCapped(res, MAX_ANSWER_BYTES);
      const redirect = res.status >= 300 && res.status < 400 ? " (redirects are not followed)" : "";
      return { statusCode: res.status, error: `answered ${res.status}${redirect}${text ? `: ${text.slice(0, 200)}` : ""}` };
    } catch (err) {
      if (timeout.aborted) return { error: `no answer within RTB_WEBHOOK_TIMEOUT_MS (${settings.timeoutMs} ms)` };
      const e = err as Error & { cause?: { code?: string; message?: string } };
      return { error: e.cause?.code ?? e.cause?.message ?? e.message };
    }
  }

  const timer = setInterval(() => void fill(), settings.pollMs ?? 1_000);
  timer.unref();
  void fill();
  return {
    wake: () => void fill(),
    async stop() {
      clearInterval(timer);
      stopping.abort();
      // A claim under way ends first (its rows started and cut off, leased for the next api).
      await claiming?.catch(() => {});
      await Promise.allSettled([...running]);
    },
  };
}

/** The wait before attempt `attempt + 1`: base × 2^(attempt−1), at most the maximum, 50 to 100% of it (jitter, so receivers that come back are not hit all at once). */
export function backoff(attempt: number, s: Pick<CallbackSettings, "backoffMs" | "backoffMaxMs">): number {
  const full = Math.min(s.backoffMaxMs, s.backoffMs * 2 ** Math.min(attempt - 1, 30));
  return Math.round(full * (0.5 + Math.random() / 2));
}

/** At most `cap` bytes of an answer, as text; the rest is not read. */
async function readCapped(res: Response, cap: number): Promise<string> {
  if (!res.body) return "";
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let n = 0;
  try {
    while (n < cap) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      n += value.length;
    }
  } catch {
    // What was read is enough.
  } finally {
    await reader.cancel().catch(() => {});
  }
  return Buffer.concat(chunks).subarray(0, cap).toString("utf8");
}

function callbackMetrics(registry: Registry, db: Db) {
  const outcomes = new Counter({
    name: "rtb_callback_deliveries_total",
    help: "Completion callback attempts by this api, by outcome: delivered (a 2xx answer), failed (to be retried), given_up (RTB_WEBHOOK_MAX_ATTEMPTS used, or its host no longer allowed); with callbacks off, failed and given_up without a request",
    labelNames: ["outcome"],
    registers: [registry],
  });
  for (const outcome of ["delivered", "failed", "given_up"]) outcomes.inc({ outcome }, 0);
  const latency = new Histogram({
    name: "rtb_callback_delivery_seconds",
    help: "Time from a unit's end to its callback's delivery (retries included)",
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600],
    registers: [registry],
  });
  new Gauge({
    name: "rtb_callbacks_pending",
    help: "Callback deliveries neither delivered nor given up (all apis; counted up to 100,000)",
    registers: [registry],
    async collect() {
      this.reset();
      const n = await pendingCallbacks(db).catch(() => null);
      if (n !== null) this.set(n);
    },
  });
  return { outcomes, latency };
}
