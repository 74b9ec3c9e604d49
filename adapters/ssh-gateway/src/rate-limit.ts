// Failed SSH logins per source: a sliding-window counter (this window's count plus the last
// window's, weighted by how much of it still overlaps), so each failure costs O(1) time and
// each source O(1) memory, however many attempts it makes. Past `maxFailures` the source is
// refused outright until its failures age out. The map of sources is bounded: it is kept in
// order of last failure, the oldest quiet entries are swept on every failure, and when it is
// full the least recently failing source is forgotten.

export interface FailureLimiterOpts {
  maxFailures: number;
  windowMs: number;
  /** Sources remembered at most (default 10,000: ~1 MB). */
  maxSources?: number;
  now?: () => number;
}

interface Counter {
  /** Start of the current fixed window (a multiple of windowMs). */
  windowStart: number;
  current: number;
  previous: number;
}

export class FailureLimiter {
  private readonly counters = new Map<string, Counter>();
  private readonly now: () => number;
  private readonly maxSources: number;

  constructor(private readonly opts: FailureLimiterOpts) {
    this.now = opts.now ?? Date.now;
    this.maxSources = opts.maxSources ?? 10_000;
  }

  /** Whether `source` has failed too often lately. */
  blocked(source: string): boolean {
    const counter = this.counters.get(sourceKey(source));
    return counter !== undefined && this.estimate(counter, this.now()) >= this.opts.maxFailures;
  }

  fail(source: string): void {
    const key = sourceKey(source);
    const now = this.now();
    const counter = this.counters.get(key) ?? { windowStart: this.windowOf(now), current: 0, previous: 0 };
    this.roll(counter, now);
    counter.current++;
    // Re-inserted, so the map's order is the order of last failure: its head is the stalest.
    this.counters.delete(key);
    this.counters.set(key, counter);
    this.sweep(now);
  }

  /** How many sources are remembered (for tests and metrics). */
  get size(): number {
    return this.counters.size;
  }

  private windowOf(at: number): number {
    return at - (at % this.opts.windowMs);
  }

  private roll(counter: Counter, now: number): void {
    const windowStart = this.windowOf(now);
    if (windowStart === counter.windowStart) return;
    counter.previous = windowStart - counter.windowStart === this.opts.windowMs ? counter.current : 0;
    counter.current = 0;
    counter.windowStart = windowStart;
  }

  private estimate(counter: Counter, now: number): number {
    const windowStart = this.windowOf(now);
    const age = windowStart - counter.windowStart;
    if (age >= 2 * this.opts.windowMs) return 0;
    const [previous, current] = age === 0 ? [counter.previous, counter.current] : [counter.current, 0];
    const overlap = 1 - (now - windowStart) / this.opts.windowMs;
    return current + previous * overlap;
  }

  /** Drops at most two stale sources from the head, and the head itself when over the bound. */
  private sweep(now: number): void {
    for (let i = 0; i < 2; i++) {
      const head = this.counters.entries().next().value as [string, Counter] | undefined;
      if (!head || this.estimate(head[1], now) > 0) break;
      this.counters.delete(head[0]);
    }
    while (this.counters.size > this.maxSources) {
      const oldest = this.counters.keys().next().value as string;
      this.counters.delete(oldest);
    }
  }
}

/**
 * What counts as one source: an IPv4 address (also when written IPv4-mapped), or an IPv6 /64,
 * since one host usually holds a whole /64 and could otherwise rotate through it.
 */
export function sourceKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!address.includes(':')) return address;
  const [head = '', tail = ''] = address.split('::');
  const headParts = head ? head.split(':') : [];
  const tailParts = address.includes('::') && tail ? tail.split(':') : [];
  const missing = 8 - headParts.length - tailParts.length;
  const groups = [...headParts, ...Array(Math.max(missing, 0)).fill('0'), ...tailParts];
  return `${groups.slice(0, 4).map((g) => g.toLowerCase().replace(/^0+(?=.)/, '')).join(':')}::/64`;
}
