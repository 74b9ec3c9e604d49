// Who may hold an SSH connection that has not logged in yet: at most `maxPerSource` per source
// (an IPv4 address or IPv6 /64) and `maxTotal` in all. A connection counts from its first byte
// (before ssh2 sees it: a client that never sends its version line costs a socket all the same)
// until it logs in or closes. Past a cap the new connection is closed at once.
import { sourceKey } from './rate-limit.js';

export interface AdmissionLimits {
  maxPerSource: number;
  maxTotal: number;
}

/** One admitted connection's place; release() when it logs in or closes (idempotent). */
export interface Admission {
  release(): void;
}

export class LoginAdmission {
  private readonly perSource = new Map<string, number>();
  private total = 0;

  constructor(private readonly limits: AdmissionLimits) {}

  /** A place for a new connection from `source`, or why there is none. */
  admit(source: string): Admission | 'source-full' | 'total-full' {
    const key = sourceKey(source);
    const held = this.perSource.get(key) ?? 0;
    if (held >= this.limits.maxPerSource) return 'source-full';
    if (this.total >= this.limits.maxTotal) return 'total-full';
    this.perSource.set(key, held + 1);
    this.total++;
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.total--;
        const left = (this.perSource.get(key) ?? 1) - 1;
        // Deleted at zero: the map holds only sources with a connection open.
        if (left === 0) this.perSource.delete(key);
        else this.perSource.set(key, left);
      },
    };
  }

  /** Connections not logged in yet: in all, and sources holding any. */
  get counts(): { total: number; sources: number } {
    return { total: this.total, sources: this.perSource.size };
  }
}

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
