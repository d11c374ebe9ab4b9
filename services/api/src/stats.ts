/** In-process counters, reported by GET / and exported by GET /metrics (api-metrics.ts). */
export interface ApiStats {
  applied: number;
  ignored: Record<string, number>;
  deadLettered: Record<string, number>;
  dispatched: number;
  republished: number;
  publishFailures: number;
  /** Units ended as permanent errors because no message could carry them. */
  refused: number;
  /** Units this api's schedule passes enqueued (one per occurrence fired). */
  scheduleFired: number;
  /** Missed occurrences this api's passes skipped by their schedules' policies. */
  scheduleSkipped: number;
  /** Finished units, and their events, this api's retention passes deleted. */
  pruned: { units: number; events: number };
}

export const createStats = (): ApiStats => ({
  applied: 0,
  ignored: {},
  deadLettered: {},
  dispatched: 0,
  republished: 0,
  publishFailures: 0,
  refused: 0,
  scheduleFired: 0,
  scheduleSkipped: 0,
  pruned: { units: 0, events: 0 },
});

export function countInto(target: Record<string, number>, key: string, n = 1): void {
  target[key] = (target[key] ?? 0) + n;
}
