// The pieces of the LXCFS views that need no root: finding a mount in mountinfo, the bind
// mounts in config.json, and the answers without lxcfs. Real lxcfs on crun and runc:
// packages/testkit/src/lxcfs.e2e.test.ts.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { Logger } from '@roost/core';
import { Lxcfs, LXCFS_FILES, mountAt } from './lxcfs.js';
import { ociConfig } from './oci-config.js';

const silent: Logger = { info() {}, warn() {}, error() {}, debug() {} };
const spec = { id: 'sb_x', hostname: 'x', image: 'debian', limits: { cpus: 1, memoryMb: 256, pids: 64, openFiles: 1024 }, network: 'none' as const, env: {} };

describe('lxcfs views', () => {
  const root = mkdtempSync(join(tmpdir(), 'roost-lxcfs-unit-'));
  after(() => rmSync(root, { recursive: true, force: true }));

  it('finds the topmost mount at a path in mountinfo, with escaped names and its filesystem type', async () => {
    const file = join(root, 'mountinfo');
    writeFileSync(file, [
      '22 1 0:21 / /proc rw,nosuid shared:5 - proc proc rw',
      '90 22 0:50 / /var/lib/lxcfs rw,nosuid,nodev - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other',
      '91 90 0:51 / /var/lib/lxcfs rw,nosuid,nodev - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other',
      '92 22 0:52 / /data/with\\040space/lxcfs rw - fuse.lxcfs lxcfs rw',
      '',
    ].join('\n'));
    assert.deepEqual(await mountAt('/var/lib/lxcfs', file), { device: '0:51', fstype: 'fuse.lxcfs' });
    assert.deepEqual(await mountAt('/data/with space/lxcfs', file), { device: '0:52', fstype: 'fuse.lxcfs' });
    assert.deepEqual(await mountAt('/proc', file), { device: '0:21', fstype: 'proc' });
    assert.equal(await mountAt('/var/lib', file), undefined);
  });

  it('bind-mounts each view read-only over the file of the same name, after /proc and /sys', () => {
    const views = { dir: '/var/lib/lxcfs', device: '0:51', files: [...LXCFS_FILES] };
    const config = ociConfig(spec, { mountCgroup: false, toolsDir: '/tools', lxcfs: views }) as { mounts: { destination: string; source: string; type: string; options: string[] }[] };
    const destinations = config.mounts.map((m) => m.destination);
    for (const file of LXCFS_FILES) {
      const mount = config.mounts.find((m) => m.destination === `/${file}`);
      assert.ok(mount, file);
      assert.equal(mount.source, `/var/lib/lxcfs/${file}`);
      assert.equal(mount.type, 'bind');
      assert.ok(mount.options.includes('ro') && mount.options.includes('nosuid') && mount.options.includes('nodev'), mount.options.join(','));
      assert.ok(destinations.indexOf(`/${file}`) > destinations.indexOf('/proc') && destinations.indexOf(`/${file}`) > destinations.indexOf('/sys'));
    }
    const plain = ociConfig(spec, { mountCgroup: false, toolsDir: '/tools' }) as { mounts: { source: string }[] };
    assert.equal(plain.mounts.filter((m) => m.source.includes('lxcfs')).length, 0, 'no views without lxcfs');
  });

  it('without lxcfs: no views, and a problem naming the binary, the host dir and the fix', async () => {
    const lxcfs = await Lxcfs.open(join(root, 'state'), { binary: join(root, 'no-lxcfs'), hostDir: root }, silent);
    assert.equal(await lxcfs.views(), undefined);
    const problem = await lxcfs.problem();
    assert.ok(problem);
    assert.match(problem.problem, new RegExp(`lxcfs is not installed \\(no ${join(root, 'no-lxcfs')}\\) and ${root} is not an lxcfs mount`));
    assert.match(problem.problem, /free, top/);
    assert.equal(problem.fix, 'apt-get install -y lxcfs, then restart roostd');
    await lxcfs.close(true);
  });

  it('an lxcfs that does not start: no views, and a problem pointing at its log', async () => {
    const state = join(root, 'state-false');
    // Exits at once without mounting anything, as an lxcfs that cannot start would.
    const lxcfs = await Lxcfs.open(state, { binary: '/bin/false', hostDir: root }, silent);
    assert.equal(await lxcfs.views(), undefined);
    const problem = await lxcfs.problem();
    assert.ok(problem);
    assert.match(problem.problem, new RegExp(`roostd's lxcfs at ${join(state, 'lxcfs')} did not start \\(it did not mount`));
    assert.match(problem.fix, new RegExp(`see ${join(state, 'lxcfs.log')}`));
    await lxcfs.close(true);
  });

  it("turned off: no views and no problem (the admin's choice)", async () => {
    const lxcfs = await Lxcfs.open(join(root, 'state-off'), { mode: 'off' }, silent);
    assert.equal(await lxcfs.views(), undefined);
    assert.equal(await lxcfs.problem(), undefined);
    await lxcfs.close(true);
  });
});
