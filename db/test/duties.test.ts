import { beforeAll, describe, expect, it } from "vitest";
import { asDuty, type DbHandle } from "@rtb/db";
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
