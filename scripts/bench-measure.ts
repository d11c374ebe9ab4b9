/**
 * What `npm run bench` reads to measure a run: the services' Prometheus metrics (counters
 * summed over their labels), PostgreSQL's own transaction count for the run's database, and
 * the run's figures from its unit_events.
 */
import pg from "pg";
import { OUTCOMES, TERMINAL } from "@rtb/protocol";

/** Each metric's value summed over its label sets (`name{a="x"} 3` and `name{a="y"} 4`: 7). */
export function parsePrometheus(text: string): Map<string, number> {
  const sums = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    // name, optional {labels} (label values may hold spaces and braces, but not an unescaped "),
    // then the value (and an optional timestamp).
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const value = Number(m[2]);
    if (!Number.isFinite(value)) continue;
    sums.set(m[1]!, (sums.get(m[1]!) ?? 0) + value);
  }
  return sums;
}

/** GET a /metrics URL; null when there is none (no URL, 404, not reachable): an older rtb. */
export async function scrape(url: string | undefined): Promise<Map<string, number> | null> {
  if (!url) return null;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
    if (!res.ok) {
      await res.arrayBuffer();
      return null;
    }
    return parsePrometheus(await res.text());
  } catch {
    return null;
  }
}

/**
 * after - before of one metric, summed over the services' scrapes. A counter with labels has
 * no sample until its first increment, so a metric missing from one scrape counts as 0; null
 * when a scrape failed (a service without metrics) or no service has the metric at all.
 */
export function delta(before: readonly (Map<string, number> | null)[], after: readonly (Map<string, number> | null)[], name: string): number | null {
  if (before.some((m) => m === null) || after.some((m) => m === null)) return null;
  if (!after.some((m) => m!.has(name))) return null;
  let sum = 0;
  for (let i = 0; i < after.length; i++) sum += (after[i]!.get(name) ?? 0) - (before[i]!.get(name) ?? 0);
  return sum;
}

/**
 * Committed transactions of `dbName` so far (pg_stat_database, read from the `postgres`
 * database so that reading it adds nothing). PostgreSQL 15 publishes a backend's counts
 * when it goes idle, at most once a second, and an idle backend's last ones only after
 * 10 s or when it exits: read it after the services have stopped, or after 11 s of quiet.
 */
export async function committedTransactions(admin: pg.ClientConfig, dbName: string): Promise<number> {
  const client = new pg.Client({ ...admin, database: "postgres" });
  await client.connect();
  try {
    const { rows } = await client.query<{ n: string | null }>("SELECT xact_commit::text AS n FROM pg_stat_database WHERE datname = $1", [dbName]);
    return Number(rows[0]?.n ?? 0);
  } finally {
    await client.end();
  }
}

/** Wait until no session is connected to `dbName` (the services' backends have exited and published their counts). */
export async function untilNoSessions(admin: pg.ClientConfig, dbName: string, timeoutMs = 10_000): Promise<void> {
  const client = new pg.Client({ ...admin, database: "postgres" });
  await client.connect();
  try {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { rows } = await client.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1", [dbName]);
      if (rows[0]?.n === 0 || Date.now() > deadline) return;
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await client.end();
  }
}

export interface RunFigures {
  /** Units with a terminal status (success, error, cancelled). */
  terminal: number;
  success: number;
  error: number;
  /** Units dispatched more than once (a retry or a re-publish). */
  redispatched: number;
  /** From GET /go (control.dispatching_changed_at) to the last terminal event. */
  seconds: number;
  /** Dispatch -> terminal of the same attempt, milliseconds. */
  p50Ms: number;
  p99Ms: number;
}

/** A status set from @rtb/protocol as an SQL list: ('success','error'). */
const inList = (set: readonly string[]) => `(${set.map((s) => `'${s}'`).join(",")})`;

/** The run's figures from its database, after every unit is terminal. */
export async function runFigures(conn: pg.ClientConfig): Promise<RunFigures> {
  const client = new pg.Client(conn);
  await client.connect();
  try {
    const { rows: counts } = await client.query<{ terminal: number; success: number; error: number; redispatched: number }>(`
      SELECT count(*) FILTER (WHERE status IN ${inList(TERMINAL)})::int AS terminal,
             count(*) FILTER (WHERE status = 'success')::int AS success,
             count(*) FILTER (WHERE status = 'error')::int AS error,
             count(*) FILTER (WHERE attempt > 1)::int AS redispatched
      FROM units`);
    const { rows: span } = await client.query<{ seconds: number | null }>(`
      SELECT extract(epoch FROM (SELECT max(at) FROM unit_events WHERE status IN ${inList(OUTCOMES)})
                              - (SELECT dispatching_changed_at FROM control))::float8 AS seconds`);
    // Each attempt's first dispatch (a re-publish may record another) and its terminal event
    // (at most one per attempt: the status rules).
    const { rows: lat } = await client.query<{ p50: number | null; p99: number | null }>(`
      SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
             percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99
      FROM (SELECT extract(epoch FROM t.at - d.at)::float8 * 1000 AS ms
            FROM (SELECT unit_id, attempt, min(at) AS at FROM unit_events WHERE status = 'dispatched' GROUP BY unit_id, attempt) d
            JOIN unit_events t ON t.unit_id = d.unit_id AND t.attempt = d.attempt AND t.status IN ${inList(OUTCOMES)}) x`);
    const c = counts[0]!;
    return {
      ...c,
      seconds: span[0]?.seconds ?? NaN,
      p50Ms: lat[0]?.p50 ?? NaN,
      p99Ms: lat[0]?.p99 ?? NaN,
    };
  } finally {
    await client.end();
  }
}

/** Whether the server runs autovacuum (this repository's CI server does not). */
export async function autovacuumOn(client: pg.Client): Promise<boolean> {
  return (await client.query<{ autovacuum: string }>("SHOW autovacuum")).rows[0]?.autovacuum === "on";
}
