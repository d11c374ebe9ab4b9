import type { JSONParsed } from "hono/utils/types";
import { isUnavailableError, recentlyActiveUnits, terminalThroughput, type ActiveUnit, type Throughput } from "@rtb/db";
import type { ErrorBody, StateView } from "@rtb/protocol";
import type { AppDeps } from "./deps.ts";
import { stateSnapshot } from "./state.ts";

/** The data of each event the hub publishes, before it is serialised. */
interface Published {
  /** The body of GET /. */
  state: StateView;
  throughput: Omit<Throughput, "nextAfterId">;
  units: { units: ActiveUnit[] };
  /** null: the snapshots work again. */
  problem: ErrorBody | null;
}

/** Each event's data as the dashboard (dashboard/dashboard.js) parses it: JSON, so timestamps are ISO strings. */
export type DashboardEvents = { [E in keyof Published]: JSONParsed<Published[E]> };

/** One server-sent event, its data already serialised. */
export interface HubEvent {
  event: string;
  data: string;
}

export interface Subscription {
  /**
   * The events this client has not been sent yet (only the latest of each kind: a slow
   * client skips snapshots instead of queueing them). Waits up to `waitMs` for one; an
   * empty list means nothing came (time for a keep-alive) or `signal` aborted.
   */
  next(waitMs: number, signal: AbortSignal): Promise<HubEvent[]>;
  close(): void;
}

export interface EventHub {
  subscribe(): Subscription;
  /** Clients connected now. */
  readonly clients: number;
  /** Whether the snapshot poller is running (only while someone listens). */
  readonly polling: boolean;
}

export const THROUGHPUT_WINDOW_MS = 10 * 60_000;
export const THROUGHPUT_BUCKET_MS = 10_000;
export const RECENT_UNITS = 25;

type HubDeps = Pick<AppDeps, "db" | "broker" | "stats" | "maxQueue" | "duties" | "logger" | "closing" | "settings">;

/**
 * The snapshot poller behind GET /events. One per api process: while at least one client
 * listens, it computes a snapshot every `intervalMs` (state, throughput, recent units) and
 * hands the same serialised events to every client, so the database sees one poll however
 * many dashboards are open. A client is sent an event only when its data differs from what
 * that client was sent last: while nothing changes, nothing is sent (the stream's keep-alive
 * comment aside, dashboard.ts). It stops when the last client leaves, or when the api closes.
 */
export function createEventHub(deps: HubDeps, intervalMs = 1_000): EventHub {
  const { logger, closing } = deps;
  const clients = new Set<{ sent: Map<string, string>; wake: () => void }>();
  // The latest data of each event kind; a new client gets all of it at once.
  const latest = new Map<string, string>();
  let polling = false;
  let failing = false;
  let throughputAfter: number | undefined;
  let throughputCounted: string | undefined;
  let stateCounted: string | undefined;

  const publish = <E extends keyof Published>(event: E, data: Published[E]) => {
    latest.set(event, JSON.stringify(data));
    for (const c of clients) c.wake();
  };

  async function tick(): Promise<void> {
    try {
      const [state, throughput, units] = await Promise.all([
        stateSnapshot(deps),
        terminalThroughput(deps.db, { windowMs: THROUGHPUT_WINDOW_MS, bucketMs: THROUGHPUT_BUCKET_MS, afterId: throughputAfter }),
        recentlyActiveUnits(deps.db, RECENT_UNITS),
      ]);
      // The next tick reads only what is still in the window; not after a capped read, which
      // must be redone from the cap to see the window fill in.
      const complete = throughput.coveredFrom.getTime() <= throughput.now.getTime() - THROUGHPUT_WINDOW_MS;
      throughputAfter = complete ? throughput.nextAfterId : undefined;
      const { nextAfterId: _, ...chart } = throughput;
      // Every heartbeat moves an instance's lastSeen, every retention pass (finding nothing or
      // not) its lastRunAt, and every renewal a duty lease's expiresAt: the state is sent again
      // only when something else changes (an instance or a holder that comes or goes
      // included), so an idle system with live agents sends nothing.
      const { lastRunAt: _ran, lastRunBy: _by, ...retention } = state.retention;
      const stateKey = JSON.stringify({
        ...state,
        services: Object.fromEntries(Object.entries(state.services).map(([k, list]) => [k, list.map(({ lastSeen: _, ...i }) => i)])),
        duties: { ...state.duties, leases: state.duties.leases.map(({ expiresAt: _, ...l }) => l) },
        retention,
      });
      if (stateKey !== stateCounted || !latest.has("state")) {
        stateCounted = stateKey;
        publish("state", state);
      }
      // `now` and the window's start move on every tick: the chart is sent again only when
      // its counts (or where they are in the window) change, so an idle system sends nothing.
      const counted = JSON.stringify([chart.buckets.map((b) => [b.success, b.error]), complete || chart.coveredFrom]);
      if (counted !== throughputCounted || !latest.has("throughput")) {
        throughputCounted = counted;
        publish("throughput", chart);
      }
      publish("units", { units });
      if (failing) {
        failing = false;
        publish("problem", null);
        logger.info("dashboard snapshots recovered");
      }
    } catch (err) {
      if (closing.aborted) return;
      // Logged once per streak: a database outage must not write a line a second.
      if (!failing) logger.warn({ err: (err as Error).message }, "dashboard snapshot failed; retrying every second");
      failing = true;
      publish(
        "problem",
        isUnavailableError(err)
          ? { error: "database_unavailable", message: "PostgreSQL is not reachable; the figures shown are the last known" }
          : { error: "internal", message: "the snapshot failed; see the api log" },
      );
    }
  }

  async function poll(): Promise<void> {
    polling = true;
    try {
      while (clients.size > 0 && !closing.aborted) {
        const started = Date.now();
        await tick();
        await sleep(Math.max(0, intervalMs - (Date.now() - started)), closing);
      }
    } finally {
      polling = false;
      // A snapshot kept while nobody listens would be stale for the next client.
      latest.clear();
      failing = false;
      throughputAfter = undefined;
      throughputCounted = undefined;
      stateCounted = undefined;
    }
  }

  return {
    get clients() {
      return clients.size;
    },
    get polling() {
      return polling;
    },
    subscribe() {
      let wake = () => {};
      let woken = false;
      const client = {
        sent: new Map<string, string>(),
        wake: () => {
          woken = true;
          wake();
        },
      };
      clients.add(client);
      if (!polling && !closing.aborted) {
        poll().catch((err: unknown) => logger.error({ err }, "dashboard poller crashed"));
      }
      const unsent = () => {
        const out: HubEvent[] = [];
        for (const [event, data] of latest) {
          if (client.sent.get(event) === data) continue;
          client.sent.set(event, data);
          out.push({ event, data });
        }
        return out;
      };
      return {
        async next(waitMs, signal) {
          for (;;) {
            woken = false;
            const out = unsent();
            if (out.length > 0 || signal.aborted) return out;
            const arrived = await new Promise<boolean>((resolve) => {
              const timer = setTimeout(() => done(false), waitMs);
              const onAbort = () => done(false);
              signal.addEventListener("abort", onAbort, { once: true });
              function done(v: boolean) {
                clearTimeout(timer);
                signal.removeEventListener("abort", onAbort);
                wake = () => {};
                resolve(v);
              }
              wake = () => done(true);
              // Published between unsent() and here.
              if (woken) done(true);
            });
            if (!arrived) return [];
          }
        },
        close() {
          clients.delete(client);
          client.wake();
        },
      };
    },
  };
}

/** Sleep `ms`, or less if `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
