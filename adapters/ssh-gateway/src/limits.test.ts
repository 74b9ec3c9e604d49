// The gateway's bookkeeping of hostile clients, on a fake clock: failures per source,
// connections not logged in yet, and warnings a flood must not multiply.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConnectionCaps, sourceKey } from '@roost/core';
import { FailureLimiter } from './rate-limit.js';
import { ThrottledWarning } from './throttled-warning.js';

describe('FailureLimiter', () => {
  it('blocks a source past maxFailures within the window, others not, and forgets it once its failures age out', () => {
    let now = 10_000;
    const limiter = new FailureLimiter({ maxFailures: 3, windowMs: 1000, now: () => now });
    for (let i = 0; i < 2; i++) limiter.fail('10.0.0.1');
    assert.equal(limiter.blocked('10.0.0.1'), false);
    limiter.fail('10.0.0.1');
    assert.equal(limiter.blocked('10.0.0.1'), true);
    assert.equal(limiter.blocked('10.0.0.2'), false);
    // A whole window later they still count (the ring holds a window and the bucket filling)…
    now += 1000;
    assert.equal(limiter.blocked('10.0.0.1'), true);
    // …and one bucket (a tenth of the window) after that they are gone.
    now += 100;
    assert.equal(limiter.blocked('10.0.0.1'), false);
  });

  it('counts every failure within a window, also across any boundary (no edge to burst across)', () => {
    let now = 0;
    const limiter = new FailureLimiter({ maxFailures: 10, windowMs: 1000, now: () => now });
    now = 950;
    for (let i = 0; i < 9; i++) limiter.fail('a');
    now = 1050;
    assert.equal(limiter.blocked('a'), false);
    limiter.fail('a');
    assert.equal(limiter.blocked('a'), true);
    // Failures spread evenly over a window add up too.
    const spread = new FailureLimiter({ maxFailures: 10, windowMs: 1000, now: () => now });
    for (let i = 0; i < 10; i++) {
      now += 99;
      spread.fail('b');
    }
    assert.equal(spread.blocked('b'), true);
  });

  it('keeps one counter per source however many failures it has (O(1) per failure)', () => {
    let now = 0;
    const limiter = new FailureLimiter({ maxFailures: 20, windowMs: 60_000, now: () => now });
    const started = performance.now();
    for (let i = 0; i < 1_000_000; i++) {
      now += 1;
      limiter.fail('203.0.113.9');
    }
    const elapsedMs = performance.now() - started;
    assert.equal(limiter.size, 1);
    assert.equal(limiter.blocked('203.0.113.9'), true);
    // A million failures in well under a second: no per-failure array to filter.
    assert.ok(elapsedMs < 2000, `a million failures took ${elapsedMs.toFixed(0)} ms`);
  });

  it('bounds its map: quiet sources are swept, and past maxSources the least recently failing one goes', () => {
    let now = 0;
    const limiter = new FailureLimiter({ maxFailures: 5, windowMs: 1000, maxSources: 100, now: () => now });
    for (let i = 0; i < 10_000; i++) limiter.fail(`198.51.100.${i % 250}-${i}`);
    assert.equal(limiter.size, 100);
    // Two windows later every old counter is stale: each new failure sweeps up to two of them,
    // so 60 failures of new sources leave only those 60.
    now = 5000;
    for (let i = 0; i < 60; i++) limiter.fail(`192.0.2.${i}`);
    assert.equal(limiter.size, 60);
  });

  it('counts an IPv6 /64 as one source, and an IPv4-mapped address as the IPv4 one', () => {
    assert.equal(sourceKey('2001:db8:1:2:aaaa::1'), sourceKey('2001:0db8:0001:0002:bbbb:cccc:dddd:eeee'));
    assert.notEqual(sourceKey('2001:db8:1:2::1'), sourceKey('2001:db8:1:3::1'));
    assert.equal(sourceKey('::ffff:192.0.2.7'), '192.0.2.7');
    assert.equal(sourceKey('::1'), '0:0:0:0::/64');
    let now = 0;
    const limiter = new FailureLimiter({ maxFailures: 2, windowMs: 1000, now: () => now });
    limiter.fail('2001:db8:1:2::1');
    limiter.fail('2001:db8:1:2::ffff');
    assert.equal(limiter.blocked('2001:db8:1:2::42'), true);
    assert.equal(limiter.blocked('2001:db8:1:3::42'), false);
  });
});

describe('ConnectionCaps', () => {
  it('admits up to the cap per source and in all, and frees a place on release (once)', () => {
    const admission = new ConnectionCaps({ maxPerSource: 2, maxTotal: 3 });
    const a1 = admission.admit('10.0.0.1');
    const a2 = admission.admit('10.0.0.1');
    assert.equal(admission.admit('10.0.0.1'), 'source-full');
    const b1 = admission.admit('10.0.0.2');
    assert.equal(admission.admit('10.0.0.3'), 'total-full');
    assert.ok(typeof a1 === 'object' && typeof a2 === 'object' && typeof b1 === 'object');
    a1.release();
    a1.release();
    assert.deepEqual(admission.counts, { total: 2, sources: 2 });
    assert.equal(typeof admission.admit('10.0.0.3'), 'object');
    a2.release();
    b1.release();
    assert.deepEqual(admission.counts, { total: 1, sources: 1 });
  });
});

describe('ThrottledWarning', () => {
  it('writes the first occurrence, then at most one line per interval with the count it held back', () => {
    let now = 0;
    const lines: Record<string, unknown>[] = [];
    const warning = new ThrottledWarning(10_000, (fields) => lines.push(fields), () => now);
    for (let i = 0; i < 1000; i++) {
      warning.note({ source: `10.0.0.${i % 200}` });
      now += 10;
    }
    // 10 s of notes, one every 10 ms: the first, and one at 10 s.
    assert.equal(lines.length, 1);
    now = 10_000;
    warning.note({ source: 'x' });
    assert.equal(lines.length, 2);
    assert.deepEqual(lines[1], { source: 'x', suppressedSinceLast: 999 });
  });
});
