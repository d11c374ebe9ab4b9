import { describe, expect, it } from "vitest";
import { createProgress, progressBar, progressText } from "./progress.ts";

describe("progress", () => {
  it("has no rate or eta before two samples", () => {
    const p = createProgress();
    expect(progressText(p)).toBe("waiting for the first answer…");
    p.add({ at: 0, done: 0, total: 100 });
    expect(p.rate()).toBeNull();
    expect(p.etaMs()).toBeNull();
    expect(progressText(p)).toBe("0/100 done (0.0%)");
  });

  it("counts from the first sample: units finished before do not count", () => {
    const p = createProgress();
    p.add({ at: 0, done: 1_000_000, total: 1_000_100 });
    p.add({ at: 1_000, done: 1_000_050, total: 1_000_200 });
    expect(progressText(p)).toBe("50/200 done (25.0%), 50/s, eta 3.0s");
    // A retried unit is pending again: the count may go down, never below the start.
    p.add({ at: 2_000, done: 999_990, total: 1_000_200 });
    expect(p.last()).toEqual({ at: 2_000, done: 0, total: 200 });
  });

  it("computes the rate over the window and the time left at that rate", () => {
    const p = createProgress(10_000);
    p.add({ at: 0, done: 0, total: 10_000 });
    p.add({ at: 2_000, done: 2_000, total: 10_000 });
    expect(p.rate()).toBe(1_000);
    expect(p.etaMs()).toBe(8_000);
    expect(progressText(p, "(paused)")).toBe("2,000/10,000 done (20.0%), 1,000/s, eta 8.0s (paused)");
  });

  it("forgets samples older than the window", () => {
    const p = createProgress(10_000);
    p.add({ at: 0, done: 0, total: 1_000 });
    p.add({ at: 10_000, done: 900, total: 1_000 });
    p.add({ at: 20_000, done: 1_000, total: 1_000 });
    expect(p.rate()).toBe(10);
    expect(p.etaMs()).toBe(0);
  });

  it("draws a bar that fits the terminal", () => {
    const p = createProgress();
    p.add({ at: 0, done: 0, total: 100 });
    p.add({ at: 0, done: 50, total: 100 });
    const bar = progressBar(p, 80);
    expect(bar.length).toBeLessThanOrEqual(80);
    expect(bar).toMatch(/^\[█+░+\] 50\/100 done \(50\.0%\)$/);
    expect(bar.split("█").length - 1).toBe(bar.split("░").length - 1);
    // Too narrow for a bar: the text alone.
    expect(progressBar(p, 30)).toBe("50/100 done (50.0%)");
  });
});
