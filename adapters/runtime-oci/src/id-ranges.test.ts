// Host id ranges: index → host ids, and the host accounts a range must never cover (pure logic
// over a made-up /etc; the real engine is in id-ranges.e2e.test.ts).
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { isRoostError } from '@roost/core';
import {
  DEFAULT_REGION_SIZE, hostIdBase, hostIdBaseIn, hostIdClaims, ID_RANGES_BASE, idRegion, INSTANCE_REGION_SIZE, INSTANCE_REGIONS, lowestFreeRegion, MAX_ID_RANGES,
  overlappingClaim,
} from './id-ranges.js';

describe('host id ranges (layout)', () => {
  it('maps indexes to 65536-id blocks from 2000000, below 2^31, and refuses others', () => {
    assert.equal(hostIdBase(0), 2_000_000);
    assert.equal(hostIdBase(1), 2_065_536);
    assert.ok(hostIdBase(MAX_ID_RANGES - 1) + 65_536 <= 2 ** 31);
    for (const bad of [-1, 1.5, MAX_ID_RANGES, Number.NaN]) assert.throws(() => hostIdBase(bad), /out of bounds/);
  });

  it('finds host users, groups and subordinate id grants that a range would cover', async () => {
    const etc = await fs.mkdtemp(path.join(tmpdir(), 'roost-etc-'));
    try {
      await fs.writeFile(path.join(etc, 'passwd'), 'root:x:0:0::/root:/bin/bash\nbig:x:2065540:100::/home/big:/bin/sh\n');
      await fs.writeFile(path.join(etc, 'group'), 'root:x:0:\nusers:x:100:\n');
      await fs.writeFile(path.join(etc, 'subuid'), 'alice:100000:65536\npodman:2200000:65536\n');
      const claims = await hostIdClaims(etc);
      assert.deepEqual(claims.map((c) => c.what), ['/etc/passwd: big', '/etc/subuid: podman']);
      assert.equal(overlappingClaim(hostIdBase(0), claims), undefined, 'range 0 is clear');
      assert.equal(overlappingClaim(hostIdBase(1), claims)?.what, '/etc/passwd: big');
      assert.equal(overlappingClaim(hostIdBase(3), claims)?.what, '/etc/subuid: podman', '2196608..2262143 covers 2200000');
      assert.ok(ID_RANGES_BASE > 1_065_535, 'clear of the shared range');
    } finally {
      await fs.rm(etc, { recursive: true, force: true });
    }
  });

  it('gives the default instance indexes 0..16383 as before and every other instance a disjoint region of 512', () => {
    const defaultRegion = idRegion();
    assert.deepEqual(defaultRegion, { first: 0, size: DEFAULT_REGION_SIZE });
    assert.equal(hostIdBaseIn(defaultRegion, 0), 2_000_000, 'the default instance keeps the ids sandboxes had before regions');
    assert.equal(hostIdBaseIn(defaultRegion, 5), hostIdBase(5));
    assert.equal(INSTANCE_REGIONS, 31);
    assert.equal(hostIdBaseIn(idRegion(0), 0), 2_000_000 + 16_384 * 65_536);
    assert.equal(hostIdBaseIn(idRegion(1), 0), 2_000_000 + (16_384 + 512) * 65_536);
    // Every host id of every region's every range: no two regions (default included) share one.
    const spans = [defaultRegion, ...Array.from({ length: INSTANCE_REGIONS }, (_, r) => idRegion(r))].map((region) => ({
      first: hostIdBaseIn(region, 0),
      end: hostIdBaseIn(region, region.size - 1) + 65_536,
    }));
    for (let i = 1; i < spans.length; i++) assert.equal(spans[i]!.first, spans[i - 1]!.end, `region ${i - 1} ends where the next starts`);
    assert.ok(spans.at(-1)!.end <= 2 ** 31, 'the last region ends below 2^31');
    assert.ok(hostIdBaseIn(idRegion(INSTANCE_REGIONS - 1), INSTANCE_REGION_SIZE - 1) < 2 ** 31 - 65_535);
    for (const bad of [-1, 1.5, INSTANCE_REGIONS]) assert.throws(() => idRegion(bad), /host id region .* out of bounds/);
  });

  it('refuses an index past the region with TOO_MANY_SANDBOXES, and a bad index as a bug', () => {
    const region = idRegion(3);
    assert.equal(hostIdBaseIn(region, INSTANCE_REGION_SIZE - 1), hostIdBase(16_384 + 3 * 512 + 511));
    assert.throws(
      () => hostIdBaseIn(region, INSTANCE_REGION_SIZE),
      (error: unknown) => isRoostError(error) && error.code === 'TOO_MANY_SANDBOXES' && /holds 512 sandboxes/.test(error.message),
    );
    assert.throws(() => hostIdBaseIn(idRegion(), DEFAULT_REGION_SIZE), (error: unknown) => isRoostError(error) && error.code === 'TOO_MANY_SANDBOXES');
    for (const bad of [-1, 1.5, Number.NaN]) assert.throws(() => hostIdBaseIn(region, bad), (error: unknown) => !isRoostError(error) && /out of bounds/.test(String(error)));
  });

  it('picks the lowest region no other instance holds, and none when all are held', () => {
    assert.equal(lowestFreeRegion(new Set()), 0);
    assert.equal(lowestFreeRegion(new Set([0, 1, 3])), 2, 'a gap left by a stopped instance is filled first');
    assert.equal(lowestFreeRegion(new Set([1, 2])), 0);
    const all = new Set(Array.from({ length: INSTANCE_REGIONS }, (_, r) => r));
    assert.equal(lowestFreeRegion(all), undefined);
    all.delete(INSTANCE_REGIONS - 1);
    assert.equal(lowestFreeRegion(all), INSTANCE_REGIONS - 1);
  });
});
