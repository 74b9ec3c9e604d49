// Log lines a flood of refusals must not multiply.

/**
 * A warning that a flood must not turn into a flood of log lines: the first occurrence is
 * logged, then at most one line per `intervalMs` saying how many happened since.
 */
export class ThrottledWarning {
  private suppressed = 0;
  private lastAt = -Infinity;

  constructor(
    private readonly intervalMs: number,
    private readonly write: (fields: Record<string, unknown>) => void,
    private readonly now: () => number = Date.now,
  ) {}

  note(fields: Record<string, unknown>): void {
    const now = this.now();
    if (now - this.lastAt < this.intervalMs) {
      this.suppressed++;
      return;
    }
    this.write({ ...fields, ...(this.suppressed > 0 && { suppressedSinceLast: this.suppressed }) });
    this.suppressed = 0;
    this.lastAt = now;
  }
}
