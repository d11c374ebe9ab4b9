import { sql } from "kysely";
import { describe, expect, it } from "vitest";
import { checkSystem, loadApiConfig, sampleOutstanding, startApiService } from "@rtb/api";
import { checkTallies, type DbHandle } from "@rtb/db";
import type { StateView } from "@rtb/protocol";
import { metricValue, parsePrometheusText } from "@rtb/runtime";
import { openTestDb, run, startSystem, testLogger, useTestPlace, waitFor, type System } from "@rtb/testing";

/**
 * Retention (RTB_RETENTION) on whole apis: finished units and their timelines go once older
 * than the setting, while the system runs and the checker passes; GET / and /metrics say what
 * went; a pruned unit's ref can be used again; 0 keeps everything; replicas share the duty.
 */
describe("a system with a short retention", () => {
  const place = useTestPlace();

  async function post(system: System, body: unknown): Promise<{ status: number; body: any }> {
    const res = await system.api.app.request("/units", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    return { status: res.status, body: await res.json() };
  }

  it("runs units to success while pruning them, the checker passing throughout; GET / and /metrics show what was pruned", async () => {
    const db = place.own(openTestDb(place));
    const env = { RTB_SEED_UNITS: "0", RTB_RETENTION: "1s", RTB_AGENT_KINDS: "noop", RTB_BROADCAST_MAX_QUEUE: "20" };
    const system = place.own(await startSystem(place, env, { agents: 1 }));
    const sampler = sampleOutstanding(db.db);
    const first = await post(system, { kind: "noop", ref: "order-1" });
    expect(first.status).toBe(201);
    await system.get("/go");
    const units = 600;
    for (let i = 0; i < units - 1; i += 100) {
      expect((await post(system, Array.from({ length: Math.min(100, units - 1 - i) }, () => ({ kind: "noop" })))).status).toBe(201);
    }

    const config = loadApiConfig({ ...place.env, ...env });
    const check = () =>
      checkSystem({
        db: db.db,
        broker: system.api.broker,
        maxQueue: config.RTB_BROADCAST_MAX_QUEUE,
        dispatchTimeoutMs: config.RTB_DISPATCH_TIMEOUT_MS,
        processingTimeoutMs: config.RTB_PROCESSING_TIMEOUT_MS,
      });
    // The checker, run over and over while units run and are pruned, finds nothing wrong;
    // at least one of its runs sees some units pruned and others still there.
    const violations: unknown[] = [];
    let checkedMidway = 0;
    // `due` is read at most once a second: it follows a moment later.
    const state = await waitFor("every unit to finish and be pruned", async () => {
      const s = await system.get("/");
      const report = await check();
      violations.push(...report.violations);
      if (s.retention.pruned.units > 0 && report.total > 0) checkedMidway++;
      return s.retention.pruned.units === units && s.total === 0 && s.retention.due === 0 ? s : null;
    }, 60_000, 100);
    expect(violations).toEqual([]);
    expect(checkedMidway).toBeGreaterThan(0);
    await sampler.stop();
    expect(state.retention).toMatchObject({ setting: "1s", prunedByThisApi: state.retention.pruned, lastRunBy: expect.any(String) });
    // Every event went with its unit: 2 to 4 per unit (a `queued` or `processing` report that
    // arrives after the unit's success is not recorded), and none is left.
    const events = state.retention.pruned.events;
    expect(events).toBeGreaterThanOrEqual(units * 2);
    expect(events).toBeLessThanOrEqual(units * 4);
    expect((await db.db.selectFrom("unit_events").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow()).n).toBe(0);
    expect(Date.parse(state.retention.lastRunAt)).toBeGreaterThan(0);
    expect(state.counts).toMatchObject({ success: 0, error: 0, pending: 0 });
    const after = await checkSystem({
      db: db.db,
      broker: system.api.broker,
      maxQueue: config.RTB_BROADCAST_MAX_QUEUE,
      dispatchTimeoutMs: config.RTB_DISPATCH_TIMEOUT_MS,
      processingTimeoutMs: config.RTB_PROCESSING_TIMEOUT_MS,
      observedPeak: sampler.peak,
      expectDone: true,
    });
    expect(after.violations).toEqual([]);
    expect(after.total).toBe(0);

    const lastRunBefore = Date.parse((await system.get("/")).retention.lastRunAt) / 1000;
    const metrics = parsePrometheusText(await (await system.api.app.request("/metrics")).text());
    const lastRunAfter = Date.parse((await system.get("/")).retention.lastRunAt) / 1000;
    expect(metricValue(metrics, "rtb_pruned_units_total")).toBe(units);
    expect(metricValue(metrics, "rtb_pruned_events_total")).toBe(events);
    expect(metricValue(metrics, "rtb_prune_due_units")).toBe(0);
    // Passes go on every second: the metric is the last run's time as GET / said just before or just after.
    const lastRun = metricValue(metrics, "rtb_prune_last_run_timestamp_seconds")!;
    expect(lastRun).toBeGreaterThanOrEqual(lastRunBefore - 0.001);
    expect(lastRun).toBeLessThanOrEqual(lastRunAfter + 0.001);

    // The ref of a pruned unit names no unit any more: enqueued again, it is a new one.
    const again = await post(system, { kind: "noop", ref: "order-1" });
    expect(again.status).toBe(201);
    expect(again.body).toMatchObject({ created: true, unit: { ref: "order-1", status: "pending" } });
    expect(again.body.unit.id).not.toBe(first.body.unit.id);
    // While it exists, the ref is that unit, as before.
    const same = await post(system, { kind: "noop", ref: "order-1" });
    expect(same.body).toMatchObject({ created: false, unit: { id: again.body.unit.id } });
  }, 90_000);
});

describe("RTB_RETENTION", () => {
  const place = useTestPlace({ perTest: true });
  const apiEnv = (extra: Record<string, string>) => ({ ...place.env, RTB_SEED_UNITS: "0", RTB_RECONCILE_CRON: "0 0 1 1 *", ...extra });

  /** `n` units finished two hours ago, each with a timeline of two events. */
  async function oldFinished(db: DbHandle, n: number): Promise<void> {
    await sql`
      WITH u AS (
        INSERT INTO units (kind, group_name, payload, status, attempt, max_attempts, updated_at)
        SELECT 'k', 'g', '{}', 'success', 1, 3, now() - interval '2 hours' FROM generate_series(1, ${n})
        RETURNING id
      )
      INSERT INTO unit_events (unit_id, attempt, status, at, source)
      SELECT id, 1, s, now(), 'test' FROM u CROSS JOIN (VALUES ('dispatched'), ('success')) AS e (s)`.execute(db.db);
  }

  it("0 keeps everything: no pass prunes, and GET / says nothing is due", async () => {
    const db = place.own(openTestDb(place));
    await oldFinished(db, 50);
    const api = place.own(await startApiService(loadApiConfig(apiEnv({ RTB_RETENTION: "0" })), testLogger("api")));
    expect(await api.retention.pass()).toEqual({ units: 0, events: 0 });
    const state = (await (await api.app.request("/")).json()) as StateView;
    expect(state.total).toBe(50);
    expect(state.retention).toEqual({ setting: "0", retentionMs: 0, pruned: { units: 0, events: 0 }, prunedByThisApi: { units: 0, events: 0 }, lastRunAt: null, lastRunBy: null, due: null });
    const metrics = parsePrometheusText(await (await api.app.request("/metrics")).text());
    expect(metricValue(metrics, "rtb_pruned_units_total")).toBe(0);
    expect(metricValue(metrics, "rtb_prune_due_units")).toBeUndefined();
  });

  it("two apis: the one holding the retention duty prunes, the other's passes skip, no unit counted twice; the total is shared and kept in the database", async () => {
    const db = place.own(openTestDb(place));
    await oldFinished(db, 3_000);
    const env = apiEnv({ RTB_RETENTION: "1h" });
    const one = place.own(await startApiService(loadApiConfig({ ...env, RTB_API_ID: "api-1" }), testLogger("api")));
    const two = place.own(await startApiService(loadApiConfig({ ...env, RTB_API_ID: "api-2" }), testLogger("api")));
    // Their timers run too; passes called here as well make them overlap.
    await waitFor("every old unit to be pruned", async () => {
      await Promise.all([one.retention.pass(), two.retention.pass()]);
      return (await db.db.selectFrom("units").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow()).n === 0;
    });
    // api-1 started first: it holds the duty and pruned everything; api-2's passes skipped.
    expect(one.stats.pruned).toEqual({ units: 3_000, events: 6_000 });
    expect(two.stats.pruned).toEqual({ units: 0, events: 0 });
    for (const api of [one, two]) {
      const state = (await (await api.app.request("/")).json()) as StateView;
      expect(state.retention.pruned).toEqual({ units: 3_000, events: 6_000 });
      expect(state.retention.lastRunBy).toBe("api-1");
    }
    expect(await checkTallies(db.db)).toEqual([]);

    // A restart keeps the total; this lifetime's own count starts again.
    await two.stop();
    const three = place.own(await startApiService(loadApiConfig({ ...env, RTB_API_ID: "api-3" }), testLogger("api")));
    const state = (await (await three.app.request("/")).json()) as StateView;
    expect(state.retention.pruned).toEqual({ units: 3_000, events: 6_000 });
    expect(state.retention.prunedByThisApi).toEqual({ units: 0, events: 0 });
  });

  it("a value that is not a duration stops the api at start, naming the variable (exit 2)", async () => {
    const p = run("services/api/src/main.ts", { ...place.env, RTB_API_HOST: "127.0.0.1:0", RTB_RETENTION: "7 days" });
    expect(await p.exited).toBe(2);
    expect(p.output()).toContain('RTB_RETENTION="7 days": expected a duration');
  });
});
