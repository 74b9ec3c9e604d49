import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseQgroupRow, runCmd } from './btrfs.js';

describe('btrfs output', () => {
  it('reads a subvolume\'s own qgroup row, with and without a limit', () => {
    const table = [
      'Qgroupid    Referenced    Exclusive  Max referenced  Max exclusive   Path ',
      '--------    ----------    ---------  --------------  -------------   ---- ',
      '0/256          5259264      5259264            none       52428800   ws/a',
    ].join('\n');
    assert.deepEqual(parseQgroupRow(table, /^0\/\d+$/, 'a'), { referencedBytes: 5259264, exclusiveBytes: 5259264, exclusiveLimitBytes: 52428800 });
    const unlimited = table.replace('52428800', '    none');
    assert.equal(parseQgroupRow(unlimited, /^0\/\d+$/, 'a').exclusiveLimitBytes, null);
    assert.throws(() => parseQgroupRow(table.split('\n').slice(0, 2).join('\n'), /^0\/\d+$/, 'ws/a'), /no quota group for ws\/a/);
  });

  it('kills a command that takes too long, and says so', async () => {
    const r = await runCmd('sleep', ['5'], 100);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /killed after 100 ms/);
  });
});
