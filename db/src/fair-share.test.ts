import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { candidates, compareNames, planDispatch, type GroupShare, type Pick, type ReadyGroup } from "./fair-share.ts";

// The dispatch order's rules, checked on random inputs. Each property states a rule from
// the outside (what any correct plan must satisfy), not how planDispatch computes it.

const input = fc
  .record({
    groups: fc.array(
      fc.record({
        weight: fc.constantFrom(0.5, 1, 1, 1, 2, 3),
        maxInFlight: fc.option(fc.integer({ min: 1, max: 6 }), { nil: null }),
        inFlight: fc.integer({ min: 0, max: 6 }),
        lastServed: fc.option(fc.integer({ min: 0, max: 50 }), { nil: null }),
        ready: fc.array(fc.integer({ min: 0, max: 12 }), { minLength: 3, maxLength: 3 }),
      }),
      { minLength: 1, maxLength: 8 },
    ),
    k: fc.integer({ min: 1, max: 60 }),
  })
  .map(({ groups, k }) => {
    const shares = new Map<string, GroupShare>();
    const ready: ReadyGroup[] = [];
    groups.forEach((g, i) => {
      const name = `g${i}`;
      // A group's in flight never exceeds its limit (the limit may have been lowered: allow equal).
      shares.set(name, { weight: g.weight, maxInFlight: g.maxInFlight, inFlight: g.maxInFlight === null ? g.inFlight : Math.min(g.inFlight, g.maxInFlight), lastServed: g.lastServed });
      g.ready.forEach((n, priority) => n > 0 && ready.push({ group: name, priority, ready: n }));
    });
    return { ready, shares, k };
  });

type Plan = { ready: ReadyGroup[]; shares: Map<string, GroupShare>; k: number; picks: Pick[] };
const plans = input.map((i): Plan => ({ ...i, picks: planDispatch(i.ready, i.shares, i.k) }));

const room = (p: Plan, g: string) => {
  const s = p.shares.get(g)!;
  return s.maxInFlight === null ? Infinity : s.maxInFlight - s.inFlight;
};
const taken = (p: Plan, g: string, priority?: number) => p.picks.filter((x) => x.group === g && (priority === undefined || x.priority === priority)).length;
const readyAt = (p: Plan, g: string, priority: number) => p.ready.find((r) => r.group === g && r.priority === priority)?.ready ?? 0;
/** Could g take one more unit at this priority after the plan? */
const couldTakeMore = (p: Plan, g: string, priority: number) => readyAt(p, g, priority) > taken(p, g, priority) && taken(p, g) < room(p, g);

describe("planDispatch (property-based)", () => {
  it("takes as many units as it may: k, or everything the groups' ready units and limits allow", () => {
    fc.assert(
      fc.property(plans, (p) => {
        const groups = new Set(p.ready.map((r) => r.group));
        const available = [...groups].reduce((n, g) => n + Math.min(room(p, g), p.ready.filter((r) => r.group === g).reduce((a, r) => a + r.ready, 0)), 0);
        expect(p.picks.length).toBe(Math.min(p.k, available));
      }),
    );
  });

  it("never exceeds a group's max_in_flight, nor its ready units", () => {
    fc.assert(
      fc.property(plans, (p) => {
        for (const g of p.shares.keys()) {
          expect(taken(p, g)).toBeLessThanOrEqual(Math.max(0, room(p, g)));
          for (const priority of [0, 1, 2]) expect(taken(p, g, priority)).toBeLessThanOrEqual(readyAt(p, g, priority));
        }
      }),
    );
  });

  it("never inverts priority: a unit goes out only when no group could take one of a higher priority", () => {
    fc.assert(
      fc.property(plans, (p) => {
        p.picks.forEach((pick, i) => {
          // In the plan's own order, too: nothing lower comes before something higher.
          if (i > 0) expect(pick.priority).toBeLessThanOrEqual(p.picks[i - 1]!.priority);
          for (const g of p.shares.keys()) for (let q = pick.priority + 1; q <= 2; q++) expect(couldTakeMore(p, g, q)).toBe(false);
        });
      }),
    );
  });

  it("shares fairly: no group that could take more waits while another went past its weighted share", () => {
    fc.assert(
      fc.property(plans, (p) => {
        for (const priority of [0, 1, 2]) {
          const served = [...p.shares.keys()].filter((h) => taken(p, h, priority) > 0);
          const waiting = [...p.shares.keys()].filter((g) => couldTakeMore(p, g, priority));
          for (const h of served) {
            for (const g of waiting) {
              const sh = p.shares.get(h)!;
              const sg = p.shares.get(g)!;
              // h's last unit at this priority, against g's next one: (in flight + taken) / weight.
              const hLast = (sh.inFlight + p.picks.filter((x) => x.group === h && x.priority >= priority).length) / sh.weight;
              const gNext = (sg.inFlight + p.picks.filter((x) => x.group === g && x.priority >= priority).length + 1) / sg.weight;
              expect(hLast).toBeLessThanOrEqual(gNext + 1e-9);
            }
          }
        }
      }),
    );
  });

  it("is deterministic: the same inputs give the same plan (the preview is the top-up)", () => {
    fc.assert(
      fc.property(input, (i) => {
        expect(planDispatch(i.ready, i.shares, i.k)).toEqual(planDispatch(i.ready, i.shares, i.k));
      }),
    );
  });
});

// Many groups competing for few picks, most with nothing in flight, weights and service
// memories that tie: where leaving groups out could go wrong.
const crowded = fc
  .record({
    groups: fc.array(
      fc.record({
        weight: fc.constantFrom(0.5, 1, 1, 1, 2, 3),
        maxInFlight: fc.option(fc.integer({ min: 1, max: 3 }), { nil: null }),
        inFlight: fc.constantFrom(0, 0, 0, 1, 2),
        lastServed: fc.option(fc.integer({ min: 0, max: 5 }), { nil: null }),
        ready: fc.array(fc.constantFrom(0, 0, 1, 2, 5), { minLength: 3, maxLength: 3 }),
      }),
      { minLength: 1, maxLength: 40, size: "max" },
    ),
    names: fc.constantFrom(["a", "b"], ["a", "B", "é", "\u{1F600}", "\uE000", "\uFFFF", "z"]),
    k: fc.integer({ min: 1, max: 12 }),
  })
  .map(({ groups, names, k }) => {
    const shares = new Map<string, GroupShare>();
    const ready: ReadyGroup[] = [];
    groups.forEach((g, i) => {
      const name = `${names[i % names.length]}${i}`;
      shares.set(name, { weight: g.weight, maxInFlight: g.maxInFlight, inFlight: g.maxInFlight === null ? g.inFlight : Math.min(g.inFlight, g.maxInFlight), lastServed: g.lastServed });
      g.ready.forEach((n, priority) => n > 0 && ready.push({ group: name, priority, ready: n }));
    });
    return { ready, shares, k };
  });

describe("candidates (property-based)", () => {
  it("planning over the candidates the database returns gives the same picks as over every group", () => {
    fc.assert(
      fc.property(crowded, ({ ready, shares, k }) => {
        expect(planDispatch(candidates(ready, shares, k), shares, k)).toEqual(planDispatch(ready, shares, k));
      }),
      { numRuns: 500 },
    );
  });

  it("keeps about k + (groups in flight) per priority, not every group", () => {
    fc.assert(
      fc.property(crowded, ({ ready, shares, k }) => {
        const kept = candidates(ready, shares, k);
        for (const priority of [0, 1, 2]) {
          const idle = kept.filter((r) => r.priority === priority && shares.get(r.group)!.inFlight === 0);
          expect(idle.length).toBeLessThanOrEqual(k);
        }
      }),
    );
  });

  it("compares names in code point order, as PostgreSQL's \"C\" collation does (UTF-8 bytes)", () => {
    fc.assert(
      fc.property(fc.string({ unit: "grapheme" }), fc.string({ unit: "grapheme" }), (a, b) => {
        expect(Math.sign(compareNames(a, b))).toBe(Math.sign(Buffer.compare(Buffer.from(a), Buffer.from(b))));
      }),
      { numRuns: 1000 },
    );
    // Where JavaScript's own `<` (UTF-16 code units) puts "\u{1F600}" first.
    expect(compareNames("\uE000", "\u{1F600}")).toBeLessThan(0);
  });
});

describe("planDispatch (examples)", () => {
  const share = (s: Partial<GroupShare> = {}): GroupShare => ({ weight: 1, maxInFlight: null, inFlight: 0, lastServed: null, ...s });

  it("a group with 10,000 waiting and one with 3 both make progress from the first top-up", () => {
    const picks = planDispatch(
      [{ group: "big", priority: 0, ready: 10_000 }, { group: "small", priority: 0, ready: 3 }],
      new Map([["big", share()], ["small", share()]]),
      4,
    );
    expect(picks.map((x) => x.group)).toEqual(["big", "small", "big", "small"]);
  });

  it("counts what a group already has in flight, and its weight", () => {
    const picks = planDispatch(
      [{ group: "busy", priority: 0, ready: 10 }, { group: "idle", priority: 0, ready: 10 }, { group: "heavy", priority: 0, ready: 10 }],
      new Map([["busy", share({ inFlight: 3 })], ["idle", share()], ["heavy", share({ weight: 2 })]]),
      6,
    );
    // Scores: heavy 0.5, 1, 1.5, 2 ...; idle 1, 2, 3 ...; busy 4, 5 ... A tie goes to the group
    // served longer ago (idle, at 1 and at 2).
    expect(picks.map((x) => x.group)).toEqual(["heavy", "idle", "heavy", "heavy", "idle", "heavy"]);
  });

  it("skips a group at its max_in_flight until it has room", () => {
    const shares = new Map([["capped", share({ maxInFlight: 2, inFlight: 1 })], ["other", share({ inFlight: 5 })]]);
    const picks = planDispatch([{ group: "capped", priority: 0, ready: 10 }, { group: "other", priority: 0, ready: 10 }], shares, 4);
    expect(picks.map((x) => x.group)).toEqual(["capped", "other", "other", "other"]);
  });

  it("breaks ties by who was served least recently: one-unit top-ups alternate", () => {
    const shares = new Map([["a", share({ lastServed: 7 })], ["b", share({ lastServed: 3 })]]);
    expect(planDispatch([{ group: "a", priority: 0, ready: 5 }, { group: "b", priority: 0, ready: 5 }], shares, 1)).toEqual([{ group: "b", priority: 0 }]);
  });
});
