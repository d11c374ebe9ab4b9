/** Numbers, times and durations as people read them. */

export const count = (n: number) => n.toLocaleString("en-US");

/** `1h02m`, `3m05s`, `42s`, `0.4s`. */
export function duration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return "?";
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)}s`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, "0")}h`;
}

/** `2026-11-22 10:09:39.062Z` (UTC, like the api's timestamps, minus the T). */
export function timestamp(iso: string | null | undefined): string {
  if (!iso) return "-";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toISOString().replace("T", " ");
}

/** `12s ago` relative to `now`. */
export function ago(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return "-";
  const t = new Date(iso).getTime();
  return Number.isNaN(t) ? iso : `${duration(Math.max(0, now - t))} ago`;
}

/** A value on one line, cut to `max` characters. */
export function oneLine(value: unknown, max = 60): string {
  if (value === null || value === undefined) return "-";
  const s = (typeof value === "string" ? value : JSON.stringify(value)).replace(/\s+/g, " ");
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}
