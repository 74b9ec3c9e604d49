// Failed SSH logins per source address: past `maxFailures` within `windowMs`, the source is
// refused outright until the window has passed since its last failure.

export interface FailureLimiterOpts {
  maxFailures: number;
  windowMs: number;
  now?: () => number;
}

export class FailureLimiter {
  private readonly failures = new Map<string, number[]>();
  private readonly now: () => number;

  constructor(private readonly opts: FailureLimiterOpts) {
    this.now = opts.now ?? Date.now;
  }

  /** Whether `source` has failed too often lately. */
  blocked(source: string): boolean {
    return this.recent(source).length >= this.opts.maxFailures;
  }

  fail(source: string): void {
    const recent = this.recent(source);
    recent.push(this.now());
    this.failures.set(source, recent);
    // Forget quiet sources so the map cannot grow without bound.
    if (this.failures.size > 10_000) {
      for (const key of this.failures.keys()) if (this.recent(key).length === 0) this.failures.delete(key);
    }
  }

  private recent(source: string): number[] {
    const since = this.now() - this.opts.windowMs;
    return (this.failures.get(source) ?? []).filter((at) => at > since);
  }
}
