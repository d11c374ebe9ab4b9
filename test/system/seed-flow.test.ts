import { beforeEach, describe, expect, it } from "vitest";
import { sql } from "kysely";
import { sampleOutstanding } from "@rtb/api";
import { expectRunSettled, openTestDb, seedFlowEnv, startSystem, useTestPlace, waitFor } from "@rtb/testing";
import { statusList, type DbHandle } from "@rtb/db";
import { OUTSTANDING } from "@rtb/protocol";

/** The operator flow end to end: seed, /go, every unit terminal, every rule kept. */
const place = useTestPlace({ perTest: true, kinds: ["nobody"] });
let h: DbHandle;

beforeEach(() => {
  h = place.own(openTestDb(place));
});

describe("the seed flow", () => {
  it("takes 100 seeded units to a terminal status, retrying failures, and keeps every rule", async () => {
    const system = place.own(await startSystem(place, seedFlowEnv));
    expect((await system.get("/")).counts.pending).toBe(100);
    const s = place.own(sampleOutstanding(h.db, 5));
    expect(await system.get("/go")).toMatchObject({ dispatching: true, changed: true });

    const final = await waitFor("every unit to finish", async () => {
      const state = await system.get("/");
      return state.done ? state : null;
    }, 60_000);
    // Every rule, checked by the product's checker: timelines, nothing stuck, never over the bound.
    await expectRunSettled({ db: h.db, broker: system.api.broker, env: { ...place.env, ...seedFlowEnv }, sampler: s, total: 100 });
    // Every attempt was dispatched once, and nothing needed the reconciler.
    const attempts = await h.db.selectFrom("units").select((eb) => eb.fn.sum<number>("attempt").as("n")).executeTakeFirstOrThrow();
    expect(final.publishes).toEqual({ dispatched: Number(attempts.n), republished: 0, unconfirmed: 0, refused: 0 });
    expect(final.counts.error).toBeLessThan(100);
    // The outbox was filled to the bound, not merely kept under it.
    expect(s.peak).toBe(10);

    // Failed units used all their attempts; retried units show each attempt in their timeline.
    const errored = await h.db.selectFrom("units").select(["id", "attempt"]).where("status", "=", "error").execute();
    for (const u of errored) expect(u.attempt).toBe(3);
    const retried = await h.db.selectFrom("units").select("id").where("status", "=", "success").where("attempt", ">", 1).executeTakeFirst();
    if (retried) {
      const unit = await system.get(`/units/${retried.id}`);
      expect(unit.events.filter((e: { status: string }) => e.status === "error").length).toBe(unit.attempt - 1);
      expect(unit.events.at(-1)).toMatchObject({ status: "success", attempt: unit.attempt, source: expect.stringMatching(/^agent:agent-\d$/) });
    }
    expect(final.leader).toMatchObject({ id: system.leader.id, utilization: { kinds: { simulate: { consumers: 2 } } } });
  });

  it("keeps the outbox full, never over the maximum, while a slow agent works", async () => {
    const system = place.own(
      await startSystem(
        place,
        { RTB_SEED_UNITS: "40", RTB_BROADCAST_MAX_QUEUE: "5", RTB_AGENT_ERROR_RATE: "0", RTB_AGENT_WORK_MIN_MS: "60", RTB_AGENT_WORK_MAX_MS: "120", RTB_AGENT_CONCURRENCY: "2" },
        { agents: 1 },
      ),
    );
    const s = place.own(sampleOutstanding(h.db, 5));
    await system.get("/go");
    // How full the outbox is while units wait for room: outstanding and eligible pending units,
    // read together (one snapshot) every few ms until the run is done. The product's sampler
    // keeps only the peak.
    const whileWaiting: number[] = [];
    await waitFor(
      "every unit to finish",
      async () => {
        const { rows } = await sql<{ outstanding: number; eligible: number }>`
          SELECT count(*) FILTER (WHERE status IN ${statusList(OUTSTANDING)})::int AS outstanding,
                 count(*) FILTER (WHERE status = 'pending' AND (not_before IS NULL OR not_before <= now()))::int AS eligible
          FROM units`.execute(h.db);
        const { outstanding, eligible } = rows[0]!;
        if (eligible > 0) whileWaiting.push(outstanding);
        return outstanding === 0 && eligible === 0 && (await system.get("/")).done;
      },
      60_000,
      5,
    );
    await s.stop();

    expect(s.peak).toBe(5);
    // Refilled promptly after each start (not only on the reconcile tick): while units were
    // waiting, the outbox was full in most samples.
    whileWaiting.sort((a, b) => a - b);
    expect(whileWaiting.length).toBeGreaterThan(10);
    expect(whileWaiting[Math.floor(whileWaiting.length / 2)]).toBe(5);
    expect((await system.get("/")).counts.success).toBe(40);
  });

  it("retries a failed unit when its backoff ends, without waiting for the reconcile tick", async () => {
    // The cron never fires during the test: only the dispatcher's backoff timer can retry.
    const system = place.own(
      await startSystem(
        place,
        { RTB_SEED_UNITS: "1", RTB_RECONCILE_CRON: "0 0 1 1 *", RTB_AGENT_ERROR_RATE: "1", RTB_AGENT_WORK_MIN_MS: "0", RTB_AGENT_WORK_MAX_MS: "5", RTB_RETRY_BACKOFF_MS: "50" },
        { agents: 1 },
      ),
    );
    await system.get("/go");
    const unit = await waitFor("the unit to use all its attempts", async () => {
      const u = await system.get("/units/1");
      return u.status === "error" ? u : null;
    });
    expect(unit.attempt).toBe(3);
    expect(unit.events.filter((e: { status: string }) => e.status === "dispatched")).toHaveLength(3);
  });
});
