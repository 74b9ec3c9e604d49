// The pool's life: made once, adopted while in use, settled after a crash, and a damaged one
// reported with its fix. Real btrfs on a loop device (run under the e2e lock).
import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import type { Logger } from '@roost/core';
import { createSubvolume, snapshotSubvolume } from './btrfs.js';
import { openLocalWorkspaces } from './local-workspaces.js';
import { poolProblems, POOL_IMAGE } from './pool.js';

const logged: string[] = [];
const logger: Logger = {
  info: () => {},
  debug: () => {},
  warn: (_fields, msg) => logged.push(msg),
  error: (_fields, msg) => logged.push(msg),
};
const GiB = 1024 ** 3;

async function mountsUnder(dir: string): Promise<string[]> {
  return (await fs.readFile('/proc/self/mountinfo', 'utf8')).split('\n').map((l) => l.split(' ')[4]).filter((m): m is string => !!m && m.startsWith(dir));
}

async function loopDevicesOf(file: string): Promise<string[]> {
  const found: string[] = [];
  for (const dev of await fs.readdir('/sys/block')) {
    if (!dev.startsWith('loop')) continue;
    const backing = (await fs.readFile(`/sys/block/${dev}/loop/backing_file`, 'utf8').catch(() => '')).trim();
    if (backing === file) found.push(dev);
  }
  return found;
}

describe('the workspace pool', () => {
  const dirs: string[] = [];
  const newDataDir = async () => {
    const d = await fs.mkdtemp(path.join(tmpdir(), 'roost-pool-'));
    dirs.push(d);
    return d;
  };
  after(async () => {
    for (const d of dirs) {
      const left = await mountsUnder(d);
      // Never rm -r through a mounted pool.
      if (left.length === 0) await fs.rm(d, { recursive: true, force: true });
      assert.deepEqual(left, [], `nothing left mounted under ${d}`);
    }
  });

  it('is made once, stays mounted while a workspace is in use, and is adopted by the next open', async () => {
    const dataDir = await newDataDir();
    const image = path.join(dataDir, POOL_IMAGE);
    const first = await openLocalWorkspaces({ dataDir, poolBytes: GiB, logger });
    assert.ok(first.pool.timings.createMs! > 0 && first.pool.timings.mountMs! > 0);
    assert.equal((await fs.stat(image)).size, GiB);
    // Preallocated: the blocks are there, not a sparse file.
    assert.ok((await fs.stat(image)).blocks * 512 >= GiB);
    assert.ok(logged.some((m) => m.startsWith('host-global change: mounted the workspace pool')));
    await first.create('w1', {});
    const mount = await first.open('w1');
    await fs.writeFile(path.join(mount.dir, 'upper', 'kept'), 'yes');
    await first.close();
    assert.deepEqual(await mountsUnder(dataDir), [path.join(dataDir, 'workspaces')], 'a pool in use stays mounted (its sandbox outlives roostd)');

    const second = await openLocalWorkspaces({ dataDir, poolBytes: GiB, logger });
    assert.equal(second.pool.timings.createMs, undefined, 'not made again');
    assert.equal(second.pool.timings.mountMs, undefined, 'adopted, not mounted twice');
    assert.ok(second.isOpen('w1'));
    assert.equal(await fs.readFile(path.join(second.workspaceDir('w1'), 'upper', 'kept'), 'utf8'), 'yes');
    await second.release('w1');
    await second.close();
    assert.deepEqual(await mountsUnder(dataDir), [], 'unmounted once nothing is in use');
    assert.deepEqual(await loopDevicesOf(image), [], 'and its loop device went with it');

    const third = await openLocalWorkspaces({ dataDir, poolBytes: GiB, logger });
    assert.deepEqual(await third.list(), ['w1'], 'the workspaces are in the file');
    await third.close();
  });

  it('settles what a crash left: half-made subvolumes go, a complete restore is finished, orphan snapshots go', async () => {
    const dataDir = await newDataDir();
    const ws = await openLocalWorkspaces({ dataDir, poolBytes: GiB, logger });
    const root = ws.pool.root;
    await ws.create('kept', {});
    // A create cut short: a subvolume under its temporary name.
    await createSubvolume(path.join(root, 'tmp', 'half@making-1-abc'));
    // A restore cut short between its two renames: the new state complete, the workspace moved away.
    await ws.create('restoring', {});
    const m = await ws.open('restoring');
    await fs.writeFile(path.join(m.dir, 'upper', 'state'), 'old');
    await ws.release('restoring');
    await snapshotSubvolume(ws.workspaceDir('restoring'), path.join(root, 'tmp', 'restoring@new'), false);
    await fs.writeFile(path.join(root, 'tmp', 'restoring@new', 'upper', 'state'), 'new');
    await fs.rename(ws.workspaceDir('restoring'), path.join(root, 'tmp', 'restoring@old'));
    // Snapshots of a workspace whose delete was cut short.
    await fs.mkdir(path.join(root, 'snaps', 'gone'), { recursive: true });
    await snapshotSubvolume(ws.workspaceDir('kept'), path.join(root, 'snaps', 'gone', 's0000000000001-000'), true);
    await ws.close();

    const again = await openLocalWorkspaces({ dataDir, poolBytes: GiB, logger });
    assert.deepEqual(await again.list(), ['kept', 'restoring']);
    assert.equal(await fs.readFile(path.join(again.workspaceDir('restoring'), 'upper', 'state'), 'utf8'), 'new');
    assert.deepEqual(await fs.readdir(path.join(again.pool.root, 'tmp')), []);
    assert.ok(!existsSync(path.join(again.pool.root, 'snaps', 'gone')));
    await again.close();
  });

  it('keeps the newest keepSnapshots snapshots, and one a store holds until it lets go', async () => {
    const dataDir = await newDataDir();
    const ws = await openLocalWorkspaces({ dataDir, poolBytes: GiB, keepSnapshots: 2, logger });
    await ws.create('w', {});
    const first = await ws.sync('w');
    const release = ws.hold('w', first.id);
    const second = await ws.sync('w');
    const third = await ws.sync('w');
    assert.deepEqual((await ws.snapshots('w')).map((s) => s.id), [first.id, second.id, third.id], 'the held one stays');
    assert.ok(existsSync(path.join(ws.snapshotDir('w', first.id), 'upper')), 'and can be read');
    release();
    release();
    const fourth = await ws.sync('w');
    assert.deepEqual((await ws.snapshots('w')).map((s) => s.id), [third.id, fourth.id]);
    await ws.close();
  });

  it('reports a pool file that cannot be mounted, with the fix, and refuses to open it', async () => {
    const dataDir = await newDataDir();
    const image = path.join(dataDir, POOL_IMAGE);
    // Before the pool file exists there is nothing to report.
    assert.deepEqual(await poolProblems(dataDir), []);
    await fs.writeFile(image, Buffer.alloc(64 * 1024 * 1024, 7));
    const problems = await poolProblems(dataDir);
    assert.equal(problems.length, 1);
    assert.match(problems[0]!.problem, /not a btrfs filesystem/);
    assert.match(problems[0]!.fix, /btrfs check .*workspaces\.btrfs/);
    await assert.rejects(openLocalWorkspaces({ dataDir, poolBytes: GiB, logger }), (error: Error) => {
      assert.match(error.message, /workspace pool cannot be opened/);
      assert.match(error.message, /fix: btrfs check/);
      return true;
    });
    assert.deepEqual(await mountsUnder(dataDir), []);
    assert.deepEqual(await loopDevicesOf(image), [], 'a failed mount leaves no loop device');
  });
});
