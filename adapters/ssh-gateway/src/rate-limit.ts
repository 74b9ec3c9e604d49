// Failed SSH logins per source, counted in a ring of a few time buckets per source (a tenth of
// the window each): each failure costs O(1) time and each source O(1) memory, however many
// attempts it makes. The ring covers the whole window plus the current bucket, so failures in
// any span of one window are all counted (never fewer: no window edge to burst across). Past
// `maxFailures` the source is refused outright until its failures age out. The map of sources
// is bounded: it is kept in order of last failure, the oldest quiet entries are swept on every
// failure, and when it is full the least recently failing source is forgotten.
import { sourceKey } from '@roost/core';

export interface FailureLimiterOpts {
  maxFailures: number;
  windowMs: number;
  /** Sources remembered at most (default 10,000: ~1 MB). */
  maxSources?: number;
  now?: () => number;
}

/** Buckets per window; the ring holds one more, the bucket now filling. */
const bucketsPerWindow = 10;

interface Counter {
  /** Failures per bucket, at index (bucket number % ring length). */
  counts: Uint32Array;
  /** The bucket number (time / bucket length) of the last update. */
  lastBucket: number;
}

export class FailureLimiter {
  private readonly counters = new Map<string, Counter>();
  private readonly now: () => number;
  private readonly maxSources: number;
  private readonly bucketMs: number;

  constructor(private readonly opts: FailureLimiterOpts) {
    this.now = opts.now ?? Date.now;
    this.maxSources = opts.maxSources ?? 10_000;
    this.bucketMs = Math.max(1, opts.windowMs / bucketsPerWindow);
  }

  /** Whether `source` has failed too often lately. */
  blocked(source: string): boolean {
    const counter = this.counters.get(sourceKey(source));
    return counter !== undefined && this.total(counter, this.bucketOf(this.now())) >= this.opts.maxFailures;
  }

  fail(source: string): void {
    const key = sourceKey(source);
    const bucket = this.bucketOf(this.now());
    const counter = this.counters.get(key) ?? { counts: new Uint32Array(bucketsPerWindow + 1), lastBucket: bucket };
    this.advance(counter, bucket);
    counter.counts[bucket % counter.counts.length]!++;
    // Re-inserted, so the map's order is the order of last failure: its head is the stalest.
    this.counters.delete(key);
    this.counters.set(key, counter);
    this.sweep(bucket);
  }

  /** How many sources are remembered (for tests and metrics). */
  get size(): number {
    return this.counters.size;
  }

  private bucketOf(at: number): number {
    return Math.floor(at / this.bucketMs);
  }

  /** Empties the buckets that passed since the last update. */
  private advance(counter: Counter, bucket: number): void {
    const ring = counter.counts.length;
    if (bucket - counter.lastBucket >= ring) counter.counts.fill(0);
    else for (let b = counter.lastBucket + 1; b <= bucket; b++) counter.counts[b % ring] = 0;
    counter.lastBucket = Math.max(counter.lastBucket, bucket);
  }

  /** Failures within the ring as of `bucket`, without changing the counter. */
  private total(counter: Counter, bucket: number): number {
    const ring = counter.counts.length;
    let sum = 0;
    for (let b = Math.max(bucket - ring + 1, counter.lastBucket - ring + 1); b <= counter.lastBucket; b++) sum += counter.counts[((b % ring) + ring) % ring]!;
    return sum;
  }

  /** Drops at most two stale sources from the head, and the head itself when over the bound. */
  private sweep(bucket: number): void {
    for (let i = 0; i < 2; i++) {
      const head = this.counters.entries().next().value as [string, Counter] | undefined;
      if (!head || this.total(head[1], bucket) > 0) break;
      this.counters.delete(head[0]);
    }
    while (this.counters.size > this.maxSources) {
      const oldest = this.counters.keys().next().value as string;
      this.counters.delete(oldest);
    }
  }
}
