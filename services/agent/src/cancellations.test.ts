import { describe, expect, it } from "vitest";
import { createCancellations } from "./cancellations.ts";

describe("the cancelled set", () => {
  it("is bounded by count (oldest forgotten first) and by age", () => {
    let t = 0;
    const c = createCancellations({ maxRemembered: 3, rememberMs: 1_000, now: () => t });
    c.cancel([1, 2, 3, 4].map((unitId) => ({ unitId, attempt: 1 })));
    expect([1, 2, 3, 4].map((id) => c.isCancelled(id, 1))).toEqual([false, true, true, true]);
    expect(c.isCancelled(2, 2)).toBe(false);
    t = 1_000;
    expect(c.isCancelled(4, 1)).toBe(false);
    expect(c.size).toBe(0);
  });

  it("aborts what is tracked for that attempt only, and nothing once untracked", () => {
    const c = createCancellations();
    const seen: string[] = [];
    const untrack = c.track(7, 1, (r) => seen.push(r.message));
    c.track(7, 2, () => seen.push("attempt 2"));
    c.cancel([{ unitId: 7, attempt: 1 }]);
    untrack();
    c.cancel([{ unitId: 7, attempt: 1 }]);
    expect(seen).toEqual(["unit 7 attempt 1 was cancelled"]);
  });
});
