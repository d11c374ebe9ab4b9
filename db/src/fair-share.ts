/**
 * THE dispatch order, as a pure function (docs/architecture.md, "Dispatch order"). Both the
 * top-up and GET /next call it on the same inputs, so the preview is exactly what the next
 * top-up takes.
 *
 * 1. Higher priority first: a lower priority gets units only when no group at a higher one
 *    can take more.
 * 2. Within a priority, weighted fair share across groups, counting what each group already
 *    has in flight: a group's next unit has the score (in flight + taken so far + 1) / weight,
 *    and the lowest score goes next. With equal weights that is round-robin that starts with
 *    the groups that have least in flight; a group of weight 2 keeps twice as many in flight.
 *    A group at its max_in_flight is skipped.
 * 3. Equal scores: the group served least recently first (never served first, then by name).
 *    This is the round-robin's memory between top-ups: in the steady state every top-up
 *    takes one unit, and without it the same group would win every tie.
 * 4. Within a group and priority, first in first out (the caller takes the lowest ids).
 *
 * Names compare in code point order, as PostgreSQL's "C" collation sorts them, so that the
 * database can pre-select the candidates (`candidates` below) in exactly this order.
 *
 * Cost: O(groups + k log groups), whatever the size of the backlog.
 */

/** A group with ready units at one priority. */
export interface ReadyGroup {
  group: string;
  priority: number;
  /** Units ready (pending, past any backoff) in this group at this priority. */
  ready: number;
}

/** What the order needs to know about a group (the same for all its priorities). */
export interface GroupShare {
  weight: number;
  /** null: no limit */
  maxInFlight: number | null;
  /** dispatched + queued + processing */
  inFlight: number;
  /** The top-up counter when it was last served; null: never. */
  lastServed: number | null;
}

export interface Pick {
  group: string;
  priority: number;
}

export const DEFAULT_SHARE: GroupShare = { weight: 1, maxInFlight: null, inFlight: 0, lastServed: null };

export function planDispatch(ready: readonly ReadyGroup[], shares: ReadonlyMap<string, GroupShare>, k: number): Pick[] {
  const picks: Pick[] = [];
  if (k <= 0) return picks;
  const taken = new Map<string, number>();
  // Served order within this plan: a group just picked goes behind every other at its score.
  const served = new Map<string, readonly [number, number]>();
  let tick = 0;
  const share = (g: string) => shares.get(g) ?? DEFAULT_SHARE;
  const room = (g: string) => {
    const s = share(g);
    return s.maxInFlight === null ? Infinity : s.maxInFlight - s.inFlight - (taken.get(g) ?? 0);
  };

  const byPriority = new Map<number, ReadyGroup[]>();
  for (const r of ready) {
    if (r.ready <= 0) continue;
    const level = byPriority.get(r.priority);
    if (level) level.push(r);
    else byPriority.set(r.priority, [r]);
  }

  for (const priority of [...byPriority.keys()].sort((a, b) => b - a)) {
    if (picks.length >= k) break;
    // seen: [0, 0] never served, [1, lastServed] served by an earlier top-up, [2, tick] in this plan.
    type Entry = { group: string; left: number; next: number; weight: number; seen: readonly [number, number] };
    const before = (a: Entry, b: Entry): boolean => {
      // a.next / a.weight < b.next / b.weight, without division.
      const x = a.next * b.weight;
      const y = b.next * a.weight;
      if (x !== y) return x < y;
      if (a.seen[0] !== b.seen[0]) return a.seen[0] < b.seen[0];
      if (a.seen[1] !== b.seen[1]) return a.seen[1] < b.seen[1];
      return compareNames(a.group, b.group) < 0;
    };
    const heap = new MinHeap<Entry>(before);
    const seen = (g: string): readonly [number, number] => {
      const last = share(g).lastServed;
      return served.get(g) ?? (last === null ? [0, 0] : [1, last]);
    };
    for (const r of byPriority.get(priority)!) {
      if (room(r.group) <= 0) continue;
      const s = share(r.group);
      heap.push({ group: r.group, left: r.ready, next: s.inFlight + (taken.get(r.group) ?? 0) + 1, weight: s.weight, seen: seen(r.group) });
    }
    while (picks.length < k && heap.size > 0) {
      const e = heap.pop()!;
      picks.push({ group: e.group, priority });
      taken.set(e.group, (taken.get(e.group) ?? 0) + 1);
      served.set(e.group, [2, tick++]);
      if (e.left > 1 && room(e.group) > 0) heap.push({ ...e, left: e.left - 1, next: e.next + 1, seen: served.get(e.group)! });
    }
  }
  return picks;
}

/**
 * The groups a plan of k can draw from, at each priority: every group with units in flight
 * (and room for more), and the first k of the groups with nothing in flight, in the order of
 * their first unit (weight descending, then served least recently, then name). planDispatch
 * over these gives the same picks as over every group; the database selects them the same
 * way (dispatch-inputs.ts), so a top-up reads about k + (groups in flight) rows per priority,
 * not one per group.
 *
 * Why no pick is lost: a group with nothing in flight scores 1 / weight for its first unit at
 * a priority, or more if it was taken from at a higher priority; its later units score more.
 * Picks come out in ascending order. Of the k groups ahead of a left-out group g, at most
 * (picks at higher priorities) were taken from above, so at least (picks left at this
 * priority) of them have a first unit that comes strictly before g's: g's first unit, and
 * with it all of g, is never reached.
 */
export function candidates(ready: readonly ReadyGroup[], shares: ReadonlyMap<string, GroupShare>, k: number): ReadyGroup[] {
  const share = (g: string) => shares.get(g) ?? DEFAULT_SHARE;
  const out: ReadyGroup[] = [];
  const idle = new Map<number, ReadyGroup[]>();
  for (const r of ready) {
    if (r.ready <= 0) continue;
    const s = share(r.group);
    if (s.inFlight > 0) {
      if (s.maxInFlight === null || s.inFlight < s.maxInFlight) out.push(r);
      continue;
    }
    const level = idle.get(r.priority);
    if (level) level.push(r);
    else idle.set(r.priority, [r]);
  }
  for (const level of idle.values()) {
    level.sort((a, b) => {
      const x = share(a.group);
      const y = share(b.group);
      if (x.weight !== y.weight) return y.weight - x.weight;
      if (x.lastServed !== y.lastServed) return x.lastServed === null ? -1 : y.lastServed === null ? 1 : x.lastServed - y.lastServed;
      return compareNames(a.group, b.group);
    });
    out.push(...level.slice(0, Math.max(0, k)));
  }
  return out;
}

/**
 * Code point order, which is how PostgreSQL's "C" collation sorts (UTF-8 bytes). JavaScript's
 * `<` compares UTF-16 code units instead, which puts U+10000 and above (surrogate pairs)
 * before U+E000..U+FFFF.
 */
export function compareNames(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointRank(x) - codePointRank(y);
  }
  return a.length - b.length;
}

const codePointRank = (unit: number) => (unit >= 0xe000 ? unit - 0x800 : unit >= 0xd800 ? unit + 0x2000 : unit);

/** A binary min-heap ordered by `before`. */
class MinHeap<T> {
  private readonly items: T[] = [];
  private readonly before: (a: T, b: T) => boolean;
  constructor(before: (a: T, b: T) => boolean) {
    this.before = before;
  }

  get size(): number {
    return this.items.length;
  }

  push(item: T): void {
    const a = this.items;
    a.push(item);
    let i = a.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(a[i]!, a[parent]!)) break;
      [a[i], a[parent]] = [a[parent]!, a[i]!];
      i = parent;
    }
  }

  pop(): T | undefined {
    const a = this.items;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last !== undefined) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.before(a[l]!, a[m]!)) m = l;
        if (r < a.length && this.before(a[r]!, a[m]!)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m]!, a[i]!];
        i = m;
      }
    }
    return top;
  }
}
