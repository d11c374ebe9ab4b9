import { count, duration } from "./format.ts";

/**
 * Progress towards a drained backlog, from successive GET / answers: the rate over the last
 * `windowMs` and the time left at that rate. Counted from the first sample, so a table with
 * millions of finished units still shows the run at hand: "done" is how many units became
 * terminal since, out of the units that were not terminal then plus those added since.
 * Pure (times are passed in), so the rendering is tested without a clock.
 */
export interface ProgressSample {
  at: number;
  /** success + error + cancelled */
  done: number;
  total: number;
}

export interface Progress {
  add(sample: ProgressSample): void;
  /** Units per second over the window, or null before two samples. */
  rate(): number | null;
  /** Milliseconds to go at the current rate, or null when unknown. */
  etaMs(): number | null;
  /** The latest sample, counted from the first one. */
  last(): ProgressSample | undefined;
}

export function createProgress(windowMs = 10_000): Progress {
  const samples: ProgressSample[] = [];
  let base = 0;
  const rate = () => {
    const first = samples[0];
    const last = samples.at(-1);
    if (!first || !last || last.at <= first.at) return null;
    return Math.max(0, last.done - first.done) / ((last.at - first.at) / 1000);
  };
  return {
    add(raw) {
      if (samples.length === 0) base = raw.done;
      // A unit retried meanwhile is no longer terminal: never count below the start.
      const sample = { at: raw.at, done: Math.max(0, raw.done - base), total: Math.max(0, raw.total - base) };
      samples.push(sample);
      // Keep one sample at or before the window's start, so the window is always covered.
      while (samples.length > 2 && samples[1]!.at <= sample.at - windowMs) samples.shift();
    },
    rate,
    etaMs() {
      const r = rate();
      const last = samples.at(-1);
      if (!last) return null;
      if (last.done >= last.total) return 0;
      return r ? ((last.total - last.done) / r) * 1000 : null;
    },
    last: () => samples.at(-1),
  };
}

/** `45,123/100,000 done (45.1%), 1,234/s, eta 44s` */
export function progressText(p: Progress, note = ""): string {
  const s = p.last();
  if (!s) return "waiting for the first answer…";
  const pct = s.total === 0 ? 100 : (s.done / s.total) * 100;
  const rate = p.rate();
  const eta = p.etaMs();
  const parts = [
    `${count(s.done)}/${count(s.total)} done (${pct.toFixed(1)}%)`,
    rate === null ? null : `${count(Math.round(rate))}/s`,
    eta === null ? null : `eta ${duration(eta)}`,
  ].filter(Boolean);
  return parts.join(", ") + (note ? ` ${note}` : "");
}

/** `[█████░░░░░] 45,123/100,000 done (45.1%), 1,234/s, eta 44s`, fitting in `columns`. */
export function progressBar(p: Progress, columns: number, note = ""): string {
  const text = progressText(p, note);
  const s = p.last();
  const width = Math.min(40, columns - text.length - 4);
  if (!s || width < 10) return text.slice(0, Math.max(0, columns - 1));
  const filled = s.total === 0 ? width : Math.min(width, Math.floor((s.done / s.total) * width));
  return `[${"█".repeat(filled)}${"░".repeat(width - filled)}] ${text}`;
}
