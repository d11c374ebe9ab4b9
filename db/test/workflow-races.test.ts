import { sql } from "kysely";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  addDependencies,
  applyStatusUpdates,
  cancelUnit,
  checkTallies,
  checkTimelines,
  checkWorkflows,
  claimTopUp,
  compactTallies,
  countByStatus,
  enqueueUnits,
  enqueueWorkflow,
  getWorkflow,
  pruneBatch,
  retryUnit,
  setDispatching,
  tallyByStatus,
  type ApplyResult,
  type ClaimedUnit,
  type Db,
  type DbHandle,
  type NewStep,
  type ReportedUpdate,
} from "@rtb/db";
import type { Spawn, UnitStatus } from "@rtb/protocol";
import { openTestDb, useTestPlace, waitFor } from "@rtb/testing";

/**
 * Workflows under concurrency, in the database: what several api replicas (or one api's
 * overlapping batches) do to the same workflow at the same time. Two handles (two pools, so two
 * connections), and a gate that makes the overlap certain instead of likely: a test-only
 * trigger, after the workflow trigger, makes the transaction that finishes a unit named in
 * `test_hold` wait for an advisory lock the test holds. That transaction has then done all
 * its work (the unit finished, its dependents' rows and the workflow's row locked) and not
 * committed; the other transaction runs into it, and the test sees it wait
 * (pg_stat_activity) before opening the gate.
 */
const place = useTestPlace();
let h1: DbHandle;
let h2: DbHandle;
/** The gate's session: holds the advisory lock while a transaction is to wait at the gate. */
let gateHandle: DbHandle;
const opts = { retryBaseMs: 1_000, retryMaxMs: 60_000, maxAttempts: 3 };
const GATE = 4242;

beforeAll(async () => {
  h1 = place.own(openTestDb(place));
  h2 = place.own(openTestDb(place));
  gateHandle = place.own(openTestDb(place));
  await setDispatching(h1.db, true);
  await sql`CREATE TABLE test_hold (unit_id bigint PRIMARY KEY)`.execute(h1.db);
  await sql`
    CREATE FUNCTION test_hold() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF EXISTS (SELECT FROM new_rows n JOIN old_rows o ON o.id = n.id JOIN test_hold t ON t.unit_id = n.id
                 WHERE n.status IN ('success', 'error', 'cancelled') AND o.status NOT IN ('success', 'error', 'cancelled')) THEN
        PERFORM pg_advisory_xact_lock_shared(${sql.lit(GATE)});
      END IF;
      RETURN NULL;
    END $$`.execute(h1.db);
  // Statement triggers fire in name order: this one after units_workflow_update.
  await sql`
    CREATE TRIGGER zz_test_hold AFTER UPDATE ON units
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION test_hold()`.execute(h1.db);
  // Every change of a workflow's status, to count how often one finished.
  await sql`CREATE TABLE test_workflow_log (workflow_id bigint, before text, after text)`.execute(h1.db);
  await sql`
    CREATE FUNCTION test_workflow_log() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO test_workflow_log VALUES (NEW.id, OLD.status, NEW.status);
      RETURN NULL;
    END $$`.execute(h1.db);
  await sql`
    CREATE TRIGGER test_workflow_log AFTER UPDATE OF status ON workflows
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION test_workflow_log()`.execute(h1.db);
});

afterAll(async () => {
  await sql`DROP TRIGGER zz_test_hold ON units`.execute(h1.db);
  await sql`DROP TRIGGER test_workflow_log ON workflows`.execute(h1.db);
});

beforeEach(async () => {
  await sql`DELETE FROM test_hold`.execute(h1.db);
  await sql`DELETE FROM test_workflow_log`.execute(h1.db);
  await sql`DELETE FROM unit_events`.execute(h1.db);
  await sql`DELETE FROM unit_deps`.execute(h1.db);
  await sql`DELETE FROM units`.execute(h1.db);
  await sql`DELETE FROM workflows`.execute(h1.db);
  await compactTallies(h1.db);
});

const step = (name: string, dependsOn: string[] = []): NewStep => ({
  step: name,
  unit: { kind: "simulate", group: "g", priority: 0, payload: { step: name }, ref: null, maxAttempts: 1 },
  dependsOn: dependsOn.map((d) => ({ step: d })),
});

const workflow = (steps: NewStep[]) => enqueueWorkflow(h1.db, { name: "race", ref: null, onFailure: "cancel", steps });

/** Claim what is ready, by step name, and report it processing. */
async function claim(db: Db = h1.db): Promise<Map<string, ClaimedUnit>> {
  const { units } = await claimTopUp(db, 10_000);
  const names = await db.selectFrom("units").select(["id", "step"]).where("id", "in", units.length ? units.map((u) => u.unitId) : [0]).execute();
  const byId = new Map(names.map((n) => [n.id, n.step ?? String(n.id)]));
  if (units.length > 0) await applyStatusUpdates(db, units.map((u) => report(u, "processing")), opts);
  return new Map(units.map((u) => [byId.get(u.unitId)!, u]));
}

const report = (u: ClaimedUnit, status: ReportedUpdate["status"], extra: Partial<ReportedUpdate> = {}): ReportedUpdate => ({
  unitId: u.unitId,
  attempt: u.attempt,
  status,
  at: new Date(),
  source: "agent:t",
  ...(status === "success" ? { result: { done: u.unitId } } : {}),
  ...extra,
});

const success = (u: ClaimedUnit, extra: Partial<ReportedUpdate> = {}) => report(u, "success", extra);

/** The sessions of this database waiting right now: at the gate (advisory), or on a row another transaction holds. */
async function waiting(): Promise<{ gate: number; rows: number }> {
  const { rows } = await sql<{ gate: number; rows: number }>`
    SELECT count(*) FILTER (WHERE wait_event = 'advisory')::int AS gate,
           count(*) FILTER (WHERE wait_event IN ('transactionid', 'tuple'))::int AS rows
    FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`.execute(gateHandle.db);
  return rows[0]!;
}

/**
 * Run `first`, which finishes the unit `held` and stops at the gate before it commits; once it
 * waits there, run `second`, wait until it is blocked on a row `first` holds (or has returned
 * already, when `mayPass`), then open the gate. Returns both results, and whether `second`
 * waited for `first` (the overlap is then certain, not a matter of timing).
 */
async function overlap<A, B>(held: number, first: () => Promise<A>, second: () => Promise<B>, mayPass = false): Promise<{ a: A; b: B; secondWaited: boolean }> {
  await sql`INSERT INTO test_hold (unit_id) VALUES (${held})`.execute(h1.db);
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  let locked!: () => void;
  const isLocked = new Promise<void>((r) => (locked = r));
  const gate = gateHandle.db.connection().execute(async (conn) => {
    await sql`SELECT pg_advisory_lock(${GATE})`.execute(conn);
    locked();
    await opened;
    await sql`SELECT pg_advisory_unlock(${GATE})`.execute(conn);
  });
  await isLocked;
  try {
    const a = first();
    a.catch(() => {});
    await waitFor("the first transaction to wait at the gate", async () => (await waiting()).gate === 1, 10_000, 10);
    let returned = false;
    const b = second().finally(() => (returned = true));
    b.catch(() => {});
    await waitFor("the second transaction to wait for the first", async () => (await waiting()).rows >= 1 || (mayPass && returned), 10_000, 10);
    const secondWaited = !returned;
    open();
    await gate;
    return { a: await a, b: await b, secondWaited };
  } finally {
    open();
    await gate.catch(() => {});
    await sql`DELETE FROM test_hold`.execute(h1.db);
  }
}

const unitOf = async (workflowId: number, name: string) =>
  h1.db.selectFrom("units").selectAll().where("workflow_id", "=", workflowId).where("step", "=", name).executeTakeFirstOrThrow();

/** The timeline events of a unit with this status (and, for workflow events, this action). */
async function events(unitId: number, status: UnitStatus, action?: string) {
  let q = h1.db.selectFrom("unit_events").selectAll().where("unit_id", "=", unitId).where("status", "=", status);
  if (action !== undefined) q = q.where(sql<boolean>`detail->>'action' = ${action}`);
  return q.execute();
}

/** How often each workflow went from running to an end. */
async function finishes(workflowId: number): Promise<string[]> {
  const { rows } = await sql<{ after: string }>`SELECT after FROM test_workflow_log WHERE workflow_id = ${workflowId} AND before = 'running'`.execute(h1.db);
  return rows.map((r) => r.after);
}

async function expectExact() {
  expect(await checkTallies(h1.db)).toEqual([]);
  expect(await tallyByStatus(h1.db)).toEqual(await countByStatus(h1.db));
  expect(await checkTimelines(h1.db)).toEqual([]);
  expect(await checkWorkflows(h1.db)).toEqual([]);
}

/** The join is ready once: pending, nothing left to wait for, one `unblocked` event. */
async function expectUnblockedOnce(workflowId: number, name = "join") {
  const join = await unitOf(workflowId, name);
  expect(join).toMatchObject({ status: "pending", waiting_on: 0 });
  expect(await events(join.id, "pending", "unblocked")).toHaveLength(1);
}

const diamond = () => workflow([step("a"), step("b"), step("join", ["a", "b"])]);

describe("a join's last two dependencies succeed in two overlapping transactions", () => {
  it.each(["a", "b"])("the join becomes pending exactly once, waiting for nothing, and the workflow finishes once (%s's transaction first)", async (firstName) => {
    const { id } = await diamond();
    const ready = await claim();
    const other = firstName === "a" ? "b" : "a";
    const { secondWaited } = await overlap(
      ready.get(firstName)!.unitId,
      () => applyStatusUpdates(h1.db, [success(ready.get(firstName)!)], opts),
      () => applyStatusUpdates(h2.db, [success(ready.get(other)!)], opts),
    );
    // The second waited for the first's lock on the join's row, then counted on from what the first left.
    expect(secondWaited).toBe(true);
    await expectUnblockedOnce(id);
    await expectExact();

    const join = (await claim()).get("join")!;
    expect(Object.keys(join.deps!).sort()).toEqual(["a", "b"]);
    await applyStatusUpdates(h1.db, [success(join)], opts);
    expect((await getWorkflow(h1.db, id))!.status).toBe("success");
    expect(await finishes(id)).toEqual(["success"]);
    await expectExact();
  });

  it("the last two steps of a workflow finish in overlapping transactions: it finishes once (the second sees the first's step finished)", async () => {
    const { id } = await workflow([step("a"), step("b")]);
    const ready = await claim();
    const { secondWaited } = await overlap(
      ready.get("a")!.unitId,
      () => applyStatusUpdates(h1.db, [success(ready.get("a")!)], opts),
      () => applyStatusUpdates(h2.db, [success(ready.get("b")!)], opts),
    );
    // The second waited for the workflow's row (locked by the first's settling), then saw no step open.
    expect(secondWaited).toBe(true);
    expect((await getWorkflow(h1.db, id))!).toMatchObject({ status: "success", finishedAt: expect.any(Date) });
    expect(await finishes(id)).toEqual(["success"]);
    await expectExact();
  });

  it("many joins at once, their dependencies' successes from two pools at the same time: each join ready once, each workflow finished once", async () => {
    const ids: number[] = [];
    for (let i = 0; i < 40; i++) ids.push((await diamond()).id);
    const ready = [...(await claimTopUp(h1.db, 10_000)).units];
    await applyStatusUpdates(h1.db, ready.map((u) => report(u, "processing")), opts);
    const rows = await h1.db.selectFrom("units").select(["id", "workflow_id", "step"]).execute();
    const name = new Map(rows.map((r) => [r.id, r.step]));
    // Each a on one pool, each b on the other, all at once, in opposite orders.
    const as = ready.filter((u) => name.get(u.unitId) === "a");
    const bs = ready.filter((u) => name.get(u.unitId) === "b").reverse();
    expect(as).toHaveLength(40);
    await Promise.all([...as.map((u) => applyStatusUpdates(h1.db, [success(u)], opts)), ...bs.map((u) => applyStatusUpdates(h2.db, [success(u)], opts))]);
    for (const id of ids) await expectUnblockedOnce(id);
    await expectExact();

    const joins = [...(await claimTopUp(h1.db, 10_000)).units];
    expect(joins).toHaveLength(40);
    await Promise.all(joins.map((u, i) => applyStatusUpdates(i % 2 ? h1.db : h2.db, [report(u, "processing"), success(u)], opts)));
    for (const id of ids) expect(await finishes(id)).toEqual(["success"]);
    await expectExact();
  });
});

describe("duplicate and reordered reports in concurrent batches (api replicas sharing the inbox)", () => {
  it("the same successes of the same attempts in two overlapping batches: applied once, the join unblocked once", async () => {
    const { id } = await diamond();
    const ready = await claim();
    const batch = [success(ready.get("a")!), success(ready.get("b")!)];
    const { a: first, b: second, secondWaited } = await overlap(
      ready.get("a")!.unitId,
      () => applyStatusUpdates(h1.db, batch, opts),
      () => applyStatusUpdates(h2.db, batch, opts),
    );
    expect(secondWaited).toBe(true);
    expect(first.applied).toBe(2);
    expect(second.applied).toBe(0);
    expect(Object.values(second.ignored).reduce((n, k) => n + (k ?? 0), 0)).toBe(2);
    for (const s of ["a", "b"]) expect(await events((await unitOf(id, s)).id, "success")).toHaveLength(1);
    await expectUnblockedOnce(id);
    await expectExact();
  });

  it("one replica has a's success, the other a's duplicate and b's success: b applied by the second, the join unblocked once", async () => {
    const { id } = await diamond();
    const ready = await claim();
    const { a: first, b: second, secondWaited } = await overlap(
      ready.get("a")!.unitId,
      () => applyStatusUpdates(h1.db, [success(ready.get("a")!)], opts),
      () => applyStatusUpdates(h2.db, [success(ready.get("b")!), success(ready.get("a")!, { result: { duplicate: true } })], opts),
    );
    expect(secondWaited).toBe(true);
    expect([first.applied, second.applied]).toEqual([1, 1]);
    // The duplicate changed nothing: a's result is the first one's.
    expect((await unitOf(id, "a")).result).toEqual({ done: ready.get("a")!.unitId });
    await expectUnblockedOnce(id);
    const join = (await claim()).get("join")!;
    expect(join.deps).toEqual({ a: { done: ready.get("a")!.unitId }, b: { done: ready.get("b")!.unitId } });
    await expectExact();
  });

  it("a dependency's success arrives before its processing (reordered): the late processing, in a concurrent batch, is ignored and re-opens nothing", async () => {
    const { id } = await diamond();
    const { units } = await claimTopUp(h1.db, 10_000);
    const byStep = new Map<string, ClaimedUnit>();
    for (const u of units) byStep.set((await h1.db.selectFrom("units").select("step").where("id", "=", u.unitId).executeTakeFirstOrThrow()).step!, u);
    const a = byStep.get("a")!;
    const b = byStep.get("b")!;
    // a: straight from dispatched to success; its processing comes later, in the other batch.
    const { a: first, b: second, secondWaited } = await overlap(
      a.unitId,
      () => applyStatusUpdates(h1.db, [success(a)], opts),
      () => applyStatusUpdates(h2.db, [report(a, "processing"), report(b, "processing"), success(b)], opts),
    );
    expect(secondWaited).toBe(true);
    expect(first.applied).toBe(1);
    expect(second.applied).toBe(2);
    expect(second.ignored).toEqual({ not_in_flight: 1 } satisfies ApplyResult["ignored"]);
    expect((await unitOf(id, "a")).status).toBe("success");
    await expectUnblockedOnce(id);
    // ... and once more, alone, after the join is ready: still nothing.
    expect((await applyStatusUpdates(h1.db, [report(a, "processing")], opts)).applied).toBe(0);
    await expectUnblockedOnce(id);
    await expectExact();
  });
});

describe("fan-out and new edges against a concurrent finish", () => {
  // Found as a bug: waiting_on was written as a count read from a statement's snapshot, over a
  // concurrent decrement committed later. Every change to it is relative now.
  it("a spawning step succeeds while a sibling dependency of its dependent succeeds in an overlapping transaction: the dependent still counts its open edges", async () => {
    // ship waits for lines (which fans out, with a join ship will wait for too) and for reserve.
    const { id } = await workflow([step("lines"), step("reserve"), step("ship", ["lines", "reserve"])]);
    const ready = await claim();
    const spawn: Spawn = {
      steps: [1, 2].map((n) => ({ step: `line-${n}`, kind: "simulate", payload: { n }, dependsOn: [] })),
      join: { step: "packed", kind: "simulate", payload: {} },
    };
    // reserve's success decrements ship's waiting_on and holds its row at the gate; the fan-out
    // then recounts ship's open edges from a snapshot without reserve's success.
    await overlap(
      ready.get("reserve")!.unitId,
      () => applyStatusUpdates(h1.db, [success(ready.get("reserve")!)], opts),
      () => applyStatusUpdates(h2.db, [success(ready.get("lines")!, { spawn })], opts),
    );
    const ship = await unitOf(id, "ship");
    const open = await h1.db.selectFrom("unit_deps").select("depends_on").where("unit_id", "=", ship.id).where("satisfied", "=", false).execute();
    // Only the join is left to wait for.
    expect(open).toHaveLength(1);
    expect(ship).toMatchObject({ status: "blocked", waiting_on: 1 });
    await expectExact();

    for (const u of (await claim()).values()) await applyStatusUpdates(h1.db, [success(u)], opts);
    await applyStatusUpdates(h1.db, [success((await claim()).get("lines/packed")!)], opts);
    await expectUnblockedOnce(id, "ship");
    await expectExact();
  });

  // Found as a bug: only dependencies not yet marked has_dependents were locked, so with one
  // that already had a dependent neither transaction saw the other's write. All are locked now.
  it("a new dependent is given an edge to a unit that already has dependents while that unit succeeds: it is not left blocked", async () => {
    // x already has a dependent (first); second is added while x's success is under way.
    const [x] = await enqueueUnits(h1.db, [{ kind: "simulate", group: "g", priority: 0, payload: {}, ref: "x", maxAttempts: 1 }]);
    const [first] = await enqueueUnits(h1.db, [{ kind: "simulate", group: "g", priority: 0, payload: {}, ref: "first", maxAttempts: 1, dependencies: 1 }]);
    await addDependencies(h1.db, [{ unitId: first!.id, dependsOn: x!.id, onFailure: "cancel" }]);
    const claimed = (await claim()).get(String(x!.id))!;
    let secondId = 0;
    await overlap(
      x!.id,
      () => applyStatusUpdates(h1.db, [success(claimed)], opts),
      () =>
        h2.db.transaction().execute(async (trx) => {
          const [second] = await enqueueUnits(trx, [{ kind: "simulate", group: "g", priority: 0, payload: {}, ref: "second", maxAttempts: 1, dependencies: 1 }]);
          secondId = second!.id;
          await addDependencies(trx, [{ unitId: second!.id, dependsOn: x!.id, onFailure: "cancel" }]);
        }),
      // It need not wait for x's transaction (it may not see x's success, but then x's must see its edge).
      true,
    );
    const rows = await h1.db.selectFrom("units").select(["id", "status", "waiting_on"]).where("id", "in", [first!.id, secondId]).orderBy("id").execute();
    expect(rows.map((r) => [r.status, r.waiting_on])).toEqual([
      ["pending", 0],
      ["pending", 0],
    ]);
    await expectExact();
  });
});

describe("an operator's retry of a step that waits for dependencies", () => {
  /**
   * charge and reserve, then ship waiting for both; charge failed and closed ship. The retry of
   * charge re-opens ship while reserve's success (its edge to ship satisfied, ship not touched:
   * it was closed) waits at the gate.
   */
  async function reopenWhileSiblingSucceeds(inWorkflow: boolean) {
    let charge: ClaimedUnit;
    let reserve: ClaimedUnit;
    let shipId: number;
    if (inWorkflow) {
      const { id } = await workflow([step("charge"), step("reserve"), step("ship", ["charge", "reserve"])]);
      const ready = await claim();
      [charge, reserve, shipId] = [ready.get("charge")!, ready.get("reserve")!, (await unitOf(id, "ship")).id];
    } else {
      const unit = (ref: string, dependencies = 0) => ({ kind: "simulate", group: "g", priority: 0, payload: {}, ref, maxAttempts: 1, dependencies });
      const [c, r] = await enqueueUnits(h1.db, [unit("charge"), unit("reserve")]);
      const [ship] = await enqueueUnits(h1.db, [unit("ship", 2)]);
      await addDependencies(h1.db, [c!, r!].map((d) => ({ unitId: ship!.id, dependsOn: d.id, onFailure: "cancel" as const })));
      const ready = await claim();
      [charge, reserve, shipId] = [ready.get(String(c!.id))!, ready.get(String(r!.id))!, ship!.id];
    }
    await applyStatusUpdates(h1.db, [report(charge, "error", { error: { message: "declined", retryable: false } })], opts);
    const shipRow = () => h1.db.selectFrom("units").selectAll().where("id", "=", shipId).executeTakeFirstOrThrow();
    expect((await shipRow()).status).toBe("cancelled");
    await overlap(
      reserve.unitId,
      () => applyStatusUpdates(h1.db, [success(reserve)], opts),
      () => retryUnit(h2.db, charge.unitId),
      true,
    );
    // ship waits for charge alone.
    expect(await shipRow()).toMatchObject({ status: "blocked", waiting_on: 1 });
    await expectExact();
    await applyStatusUpdates(h1.db, [success([...(await claim()).values()][0]!)], opts);
    expect(await shipRow()).toMatchObject({ status: "pending", waiting_on: 0 });
    await expectExact();
  }

  it("in a workflow, retrying a failed step re-opens its closed dependent while the dependent's other dependency succeeds in an overlapping transaction: the dependent counts its open edges", async () => {
    // (The re-opened dependent's workflow row, locked by the success, orders the two.)
    await reopenWhileSiblingSucceeds(true);
  });

  // Found as a bug: the same stale count as the fan-out's.
  it("outside workflows, the same: retrying a failed unit re-opens its closed dependent while the dependent's other dependency succeeds", async () => {
    await reopenWhileSiblingSucceeds(false);
  });

  // Found as a bug: a retry made any unit pending, its dependencies unread.
  it("a step cancelled while blocked, then retried, waits for its dependencies again instead of being dispatched", async () => {
    const { id } = await workflow([step("validate"), step("ship", ["validate"])]);
    const ship = await unitOf(id, "ship");
    expect((await cancelUnit(h1.db, ship.id)).outcome).toBe("done");
    expect((await retryUnit(h1.db, ship.id)).outcome).toBe("done");
    // validate has not run: ship must not be ready.
    expect((await unitOf(id, "ship")).status).toBe("blocked");
    const ready = await claim();
    expect([...ready.keys()]).toEqual(["validate"]);
    await expectExact();
  });

  it("a step closed by its failed dependency, then retried itself (not the dependency), waits for the dependency again", async () => {
    const { id } = await workflow([step("validate"), step("ship", ["validate"])]);
    const validate = (await claim()).get("validate")!;
    await applyStatusUpdates(h1.db, [report(validate, "error", { error: { message: "declined", retryable: false } })], opts);
    const ship = await unitOf(id, "ship");
    expect(ship).toMatchObject({ status: "cancelled", closed_by: validate.unitId });
    expect((await retryUnit(h1.db, ship.id)).outcome).toBe("done");
    // Its dependency ended in error: retried alone, it is closed again (or waits), never dispatched.
    expect(["blocked", "cancelled"]).toContain((await unitOf(id, "ship")).status);
    expect((await claim()).size).toBe(0);
    await expectExact();
  });
});

describe("retention and the checker (found by npm run chaos)", () => {
  it("a finished workflow partly pruned (its steps go one by one, oldest first): the checker does not read its status from the steps left", async () => {
    // reserve fails, ship ignores it: the workflow ends in error, decided by reserve.
    const { id } = await workflow([
      step("validate"),
      step("charge", ["validate"]),
      step("reserve", ["validate"]),
      { ...step("ship"), dependsOn: [{ step: "charge" }, { step: "reserve", onFailure: "ignore" }] },
    ]);
    await applyStatusUpdates(h1.db, [success((await claim()).get("validate")!)], opts);
    const ready = await claim();
    await applyStatusUpdates(h1.db, [success(ready.get("charge")!), report(ready.get("reserve")!, "error", { error: { message: "declined", retryable: false } })], opts);
    await applyStatusUpdates(h1.db, [success((await claim()).get("ship")!)], opts);
    expect((await getWorkflow(h1.db, id))!.status).toBe("error");
    // The first three finished long ago, ship just now: retention takes those three.
    await sql`UPDATE units SET updated_at = now() - interval '1 hour' WHERE step <> 'ship'`.execute(h1.db);
    expect((await h1.db.transaction().execute((trx) => pruneBatch(trx, { retentionMs: 60_000, limit: 1_000, by: "test" }))).units).toBe(3);
    const left = (await getWorkflow(h1.db, id))!;
    expect(left).toMatchObject({ status: "error", steps: [{ step: "ship", status: "success" }] });
    await expectExact();
    // What pruning cannot explain is still found: a step in error left in a workflow that says success.
    await sql`UPDATE workflows SET status = 'success' WHERE id = ${id}`.execute(h1.db);
    await sql`UPDATE units SET status = 'error' WHERE workflow_id = ${id}`.execute(h1.db);
    expect((await checkWorkflows(h1.db)).map((v) => v.rule)).toContain("workflow_status_follows_steps");
  });
});
