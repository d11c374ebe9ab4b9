import { beforeAll, describe, expect, it } from "vitest";
import { asDuty, claimDuties, dutyLeases, DUTIES, releaseDuties, type DbHandle } from "@rtb/db";
import { openTestDb, useTestPlace } from "@rtb/testing";

const place = useTestPlace();
let a: DbHandle;
let b: DbHandle;

beforeAll(() => {
  a = place.own(openTestDb(place));
  b = place.own(openTestDb(place));
});

describe("duties done once across replicas", () => {
  it("runs a duty's pass on one replica at a time; the other skips instead of waiting", async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const inside = new Promise<void>((r) => (entered = r));
    const first = asDuty(a.db, "schedules", async () => {
      entered();
      await held;
      return "first";
    });
    await inside;
    expect(await asDuty(b.db, "schedules", async () => "second")).toEqual({ ran: false });
    // Another duty is not held by it.
    expect(await asDuty(b.db, "retention", async () => "other")).toEqual({ ran: true, value: "other" });
    release();
    expect(await first).toEqual({ ran: true, value: "first" });
    // Released with the transaction: the other replica takes the duty on its next pass.
    expect(await asDuty(b.db, "schedules", async () => "second")).toEqual({ ran: true, value: "second" });
  });
});

describe("duty leases", () => {
  const ttl = 400;

  it("the first api to claim holds every duty; another gets none while the leases run, and all of them once they expired", async () => {
    expect(await claimDuties(a.db, "api-a", ttl)).toEqual([...DUTIES]);
    expect(await claimDuties(b.db, "api-b", ttl)).toEqual([]);
    // Renewed by its holder: still its own, taken once (no handover).
    expect(await claimDuties(a.db, "api-a", ttl)).toEqual([...DUTIES]);
    const held = await dutyLeases(b.db);
    expect(held.map((l) => [l.duty, l.holder, l.handovers])).toEqual(DUTIES.map((d) => [d, "api-a", 0]));
    // api-a stops renewing (it died): once the leases ran out, nobody holds them, and api-b takes them.
    await new Promise((r) => setTimeout(r, ttl + 50));
    expect((await dutyLeases(b.db)).map((l) => [l.holder, l.lastHolder])).toEqual(DUTIES.map(() => [null, "api-a"]));
    expect(await claimDuties(b.db, "api-b", ttl)).toEqual([...DUTIES]);
    const taken = await dutyLeases(b.db);
    expect(taken.map((l) => [l.holder, l.handovers])).toEqual(DUTIES.map(() => ["api-b", 1]));
    expect(await claimDuties(a.db, "api-a", ttl)).toEqual([]);
    // Given up on stop: the other api takes them at once, without waiting for the expiry.
    await releaseDuties(b.db, "api-b");
    expect(await claimDuties(a.db, "api-a", 60_000)).toEqual([...DUTIES]);
    await releaseDuties(a.db, "api-a");
  });

  it("many apis claiming at once: each duty goes to exactly one of them", async () => {
    await releaseDuties(a.db, "api-a");
    await new Promise((r) => setTimeout(r, 10));
    const handles = [a, b, place.own(openTestDb(place)), place.own(openTestDb(place))];
    const racers = handles.flatMap((h, i) => [`racer-${i}`, `racer-${i}b`].map((id) => ({ h, id })));
    const claims = await Promise.all(racers.map(({ h, id }) => claimDuties(h.db, id, 60_000)));
    // Every duty was taken once, by the racer the table names.
    expect(claims.flat().sort()).toEqual([...DUTIES].sort());
    for (const l of await dutyLeases(a.db)) expect(claims[racers.findIndex((r) => r.id === l.holder)]).toContain(l.duty);
    for (const { id } of racers) await releaseDuties(a.db, id);
  });

  it("a pass with a holder runs only while that holder's lease runs, checked in the pass's transaction", async () => {
    await new Promise((r) => setTimeout(r, 10));
    expect(await claimDuties(a.db, "api-a", ttl)).toContain("retention");
    expect(await asDuty(a.db, "retention", async () => "a", "api-a")).toEqual({ ran: true, value: "a" });
    // Not the holder: skipped, though the advisory lock is free.
    expect(await asDuty(b.db, "retention", async () => "b", "api-b")).toEqual({ ran: false });
    // The holder paused past its lease (it still believes it holds it): its pass does nothing.
    await new Promise((r) => setTimeout(r, ttl + 50));
    expect(await asDuty(a.db, "retention", async () => "a", "api-a")).toEqual({ ran: false });
    expect(await claimDuties(b.db, "api-b", ttl)).toContain("retention");
    expect(await asDuty(b.db, "retention", async () => "b", "api-b")).toEqual({ ran: true, value: "b" });
    await releaseDuties(b.db, "api-b");
  });
});
