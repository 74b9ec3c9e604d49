// A Clock whose timers fire only when the test says so: timeouts are tested without sleeping.
import type { Clock } from '@roost/core';

export class ManualClock implements Clock {
  private timers: { at: number; fn: () => void; cancelled: boolean }[] = [];
  private nowMs = Date.parse('2026-01-01T00:00:00Z');
  /** Every delay a timer was asked for, in order (a test can see what was scheduled). */
  readonly requestedDelaysMs: number[] = [];

  now() {
    return new Date(this.nowMs);
  }

  setTimeout(fn: () => void, ms: number) {
    this.requestedDelaysMs.push(ms);
    const timer = { at: this.nowMs + ms, fn, cancelled: false };
    this.timers.push(timer);
    return { cancel: () => void (timer.cancelled = true) };
  }

  advance(ms: number) {
    this.nowMs += ms;
    for (const timer of this.timers.filter((t) => !t.cancelled && t.at <= this.nowMs)) {
      timer.cancelled = true;
      timer.fn();
    }
  }
}
