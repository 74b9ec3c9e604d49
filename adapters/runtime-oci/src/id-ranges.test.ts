// Host id ranges: index → host ids, and the host accounts a range must never cover (pure logic
// over a made-up /etc; the real engine is in id-ranges.e2e.test.ts).
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { hostIdBase, hostIdClaims, ID_RANGES_BASE, MAX_ID_RANGES, overlappingClaim } from './id-ranges.js';

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
});
