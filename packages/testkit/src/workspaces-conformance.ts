// The Workspaces port's conformance suite: the fake and every implementation (local btrfs, S3)
// must pass it. A sandbox is stood in for by writing into the mount's upper/ from the host.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import { constants } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Quiesce, WorkspaceMount, Workspaces } from '@roost/core';

export interface WorkspacesConformanceOpts {
  name: string;
  newWorkspaces(): Promise<{
    workspaces: Workspaces;
    cleanup(): Promise<void>;
    /** What a deleted workspace left behind (subvolumes, dirs, objects); checked when given. */
    residue?(id: string): Promise<string[]>;
  }>;
}

const MiB = 1024 * 1024;

export function workspacesConformance(opts: WorkspacesConformanceOpts): void {
  describe(`Workspaces conformance: ${opts.name}`, () => {
    let ws: Workspaces;
    let cleanup: () => Promise<void>;
    let residue: ((id: string) => Promise<string[]>) | undefined;
    const made = new Set<string>();
    const opened = new Set<string>();

    const newId = () => {
      const id = `ws_conf${randomBytes(5).toString('hex')}`;
      made.add(id);
      return id;
    };
    const open = async (id: string): Promise<WorkspaceMount> => {
      const mount = await ws.open(id);
      opened.add(id);
      return mount;
    };
    const release = async (id: string) => {
      await ws.release(id);
      opened.delete(id);
    };
    const upper = (mount: WorkspaceMount, file: string) => path.join(mount.dir, 'upper', file);
    const write = (mount: WorkspaceMount, file: string, data: string | Buffer) => fs.writeFile(upper(mount, file), data);
    const read = (mount: WorkspaceMount, file: string) => fs.readFile(upper(mount, file), 'utf8').catch(() => undefined);
    /** Opens, reads a file, releases: what a sandbox started on it would see. */
    const contentOf = async (id: string, file: string) => {
      const mount = await open(id);
      try {
        return await read(mount, file);
      } finally {
        await release(id);
      }
    };
    /** A quiesce that counts its calls, as a runtime's freeze/thaw would wrap the capture. */
    const countingQuiesce = () => {
      const calls = { count: 0, running: false };
      const quiesce: Quiesce = async (capture) => {
        calls.count++;
        calls.running = true;
        try {
          return await capture();
        } finally {
          calls.running = false;
        }
      };
      return { calls, quiesce };
    };

    before(async () => {
      ({ workspaces: ws, cleanup, residue } = await opts.newWorkspaces());
    });
    after(async () => {
      for (const id of opened) await ws?.release(id).catch(() => {});
      for (const id of made) await ws?.delete(id).catch(() => {});
      await ws?.close();
      await cleanup?.();
    });

    it('keeps what was written across release and reopen', async () => {
      const id = newId();
      await ws.create(id, {});
      assert.ok((await ws.list()).includes(id));
      const mount = await open(id);
      assert.ok(Array.isArray(mount.lowers));
      assert.ok(existsSync(path.join(mount.dir, 'upper')) && existsSync(path.join(mount.dir, 'work')), 'upper/ and work/ exist');
      await fs.mkdir(upper(mount, 'etc'), { recursive: true });
      await write(mount, 'etc/app.conf', 'kept\n');
      await release(id);
      assert.equal(await contentOf(id, 'etc/app.conf'), 'kept\n');
      await assert.rejects(ws.create(id, {}), { code: 'WORKSPACE_EXISTS' });
      await assert.rejects(ws.open('ws_confmissing'), { code: 'WORKSPACE_NOT_FOUND' });
    });

    it('forks copy-on-write: the fork and its base change independently', async () => {
      const base = newId();
      await ws.create(base, {});
      const m = await open(base);
      await write(m, 'shared', 'from base\n');
      await release(base);

      const viaFork = newId();
      await ws.fork(base, viaFork);
      const viaCreate = newId();
      await ws.create(viaCreate, { base });
      for (const child of [viaFork, viaCreate]) assert.equal(await contentOf(child, 'shared'), 'from base\n');

      const cm = await open(viaFork);
      await write(cm, 'shared', 'changed in fork\n');
      await write(cm, 'only-in-fork', 'x');
      await release(viaFork);
      const bm = await open(base);
      assert.equal(await read(bm, 'shared'), 'from base\n', 'writes in the fork never change the base');
      assert.equal(await read(bm, 'only-in-fork'), undefined);
      await write(bm, 'only-in-base', 'y');
      await release(base);
      assert.equal(await contentOf(viaFork, 'only-in-base'), undefined, 'writes in the base never reach the fork');
      assert.equal(await contentOf(viaCreate, 'shared'), 'from base\n');

      // The fork outlives its base.
      await ws.delete(base);
      assert.equal(await contentOf(viaFork, 'shared'), 'changed in fork\n');
      await assert.rejects(ws.fork('ws_confmissing', newId()), { code: 'WORKSPACE_NOT_FOUND' });
      await assert.rejects(ws.fork(viaFork, viaCreate), { code: 'WORKSPACE_EXISTS' });
    });

    it('forks a workspace in use only under a quiesce, and then has what was written just before', async () => {
      const id = newId();
      await ws.create(id, {});
      const mount = await open(id);
      const child = newId();
      // Reachable first: a fork of the same workspace, not in use, works.
      await assert.rejects(ws.fork(id, child), { code: 'WORKSPACE_IN_USE' });
      assert.ok(!(await ws.list()).includes(child), 'a refused fork leaves nothing');

      await write(mount, 'just-before', 'written a moment ago\n');
      const { calls, quiesce } = countingQuiesce();
      await ws.fork(id, child, { quiesce });
      assert.equal(calls.count, 1, 'the capture ran under the quiesce');
      await write(mount, 'just-after', 'too late\n');
      assert.equal(await contentOf(child, 'just-before'), 'written a moment ago\n');
      assert.equal(await contentOf(child, 'just-after'), undefined);
      await release(id);
    });

    it('forks a workspace in use from its latest snapshot, or refuses when it has none', async () => {
      const id = newId();
      await ws.create(id, {});
      const mount = await open(id);
      await write(mount, 'f', 'v1\n');
      await assert.rejects(ws.create(newId(), { base: id }), { code: 'WORKSPACE_IN_USE' });
      await assert.rejects(ws.sync(id), { code: 'WORKSPACE_IN_USE' }, 'a snapshot of a workspace in use needs a quiesce');
      const { calls, quiesce } = countingQuiesce();
      await ws.sync(id, { quiesce });
      assert.equal(calls.count, 1);
      await write(mount, 'f', 'v2\n');
      const child = newId();
      await ws.create(child, { base: id });
      assert.equal(await contentOf(child, 'f'), 'v1\n', 'a base in use forks from its last snapshot');
      await release(id);
    });

    it('takes snapshots and restores one', async () => {
      const id = newId();
      await ws.create(id, {});
      let mount = await open(id);
      await write(mount, 'version', 'one\n');
      await write(mount, 'kilobytes', Buffer.alloc(3000, 1));
      await release(id);
      const before = Date.now();
      const first = await ws.sync(id);
      assert.ok(first.takenAt.getTime() >= before - 1000, 'takenAt is now');
      assert.ok(first.bytes >= 3004, `a snapshot counts its bytes (${first.bytes})`);
      assert.ok(first.files >= 2, `and its files (${first.files})`);
      const state = await ws.syncState(id);
      assert.ok(state.lastSyncedAt && state.lastSyncedAt.getTime() >= first.takenAt.getTime() - 1, 'syncState says when it was last synced');
      assert.equal(state.failure, null);

      mount = await open(id);
      await write(mount, 'version', 'two\n');
      await fs.rm(upper(mount, 'kilobytes'));
      await release(id);
      const second = await ws.sync(id);
      const list = await ws.snapshots(id);
      const ids = list.map((s) => s.id);
      assert.ok(ids.indexOf(first.id) >= 0 && ids.indexOf(first.id) < ids.indexOf(second.id), `both listed, oldest first: ${ids.join(', ')}`);
      assert.ok(second.takenAt.getTime() >= first.takenAt.getTime());

      await ws.restore(id, first.id);
      assert.equal(await contentOf(id, 'version'), 'one\n');
      assert.ok(await contentOf(id, 'kilobytes'), 'a deleted file comes back');
      await ws.restore(id, second.id);
      assert.equal(await contentOf(id, 'version'), 'two\n');
      assert.equal(await contentOf(id, 'kilobytes'), undefined);

      await assert.rejects(ws.restore(id, 'snapnotthere'), { code: 'WORKSPACE_SNAPSHOT_NOT_FOUND' });
      await open(id);
      await assert.rejects(ws.restore(id, first.id), { code: 'WORKSPACE_IN_USE' });
      await release(id);
    });

    it('resizes and reports usage; refuses a size below what it uses', async () => {
      const id = newId();
      await ws.create(id, { diskBytes: 64 * MiB });
      assert.equal((await ws.usage(id)).limitBytes, 64 * MiB);
      const mount = await open(id);
      await write(mount, 'blob', randomBytes(3 * MiB));
      await release(id);
      const used = (await ws.usage(id)).usedBytes;
      assert.ok(used >= 3 * MiB && used < 16 * MiB, `usage counts the 3 MiB written (${used})`);
      await assert.rejects(ws.resize(id, MiB), { code: 'DISK_TOO_SMALL' });
      assert.equal((await ws.usage(id)).limitBytes, 64 * MiB, 'a refused resize changes nothing');
      await ws.resize(id, 32 * MiB);
      assert.equal((await ws.usage(id)).limitBytes, 32 * MiB);
      await ws.resize(id, null);
      assert.equal((await ws.usage(id)).limitBytes, null);

      // A fork's shared data is its base's: the fork's own use starts near zero.
      const child = newId();
      await ws.fork(id, child, { diskBytes: 8 * MiB });
      const childUsage = await ws.usage(child);
      assert.equal(childUsage.limitBytes, 8 * MiB);
      if (ws.info.diskLimits) assert.ok(childUsage.usedBytes < MiB, `a fork does not pay for its base (${childUsage.usedBytes})`);
    });

    it('enforces the disk size when it says it does', async (t) => {
      if (!ws.info.diskLimits) {
        t.skip('this implementation does not enforce sizes (info.diskLimits false)');
        return;
      }
      const id = newId();
      await ws.create(id, { diskBytes: 8 * MiB });
      const mount = await open(id);
      // Reachable first: 4 MiB fits.
      await write(mount, 'fits', randomBytes(4 * MiB));
      const handle = await fs.open(upper(mount, 'too-much'), 'w');
      let failure: NodeJS.ErrnoException | undefined;
      try {
        for (let i = 0; i < 64 && !failure; i++) {
          try {
            await handle.write(randomBytes(MiB));
            await handle.sync();
          } catch (error) {
            failure = error as NodeJS.ErrnoException;
          }
        }
      } finally {
        await handle.close().catch(() => {});
      }
      assert.ok(failure, 'a writer past the size fails');
      // libuv has no name for EDQUOT (Node says "Unknown system error -122"): check the number.
      assert.ok([constants.errno.EDQUOT, constants.errno.ENOSPC].includes(-(failure.errno ?? 0)), `EDQUOT or ENOSPC, not ${failure.message}`);
      // Another workspace keeps taking writes.
      const other = newId();
      await ws.create(other, {});
      const om = await open(other);
      await write(om, 'still-fine', randomBytes(2 * MiB));
      await release(other);
      await release(id);
      // Raising the size lets the writer go on.
      await ws.resize(id, 64 * MiB);
      const m2 = await open(id);
      await write(m2, 'after-resize', randomBytes(8 * MiB));
      await release(id);
    });

    it('deletes everything of a workspace; delete is idempotent', async () => {
      const id = newId();
      await ws.create(id, {});
      const mount = await open(id);
      await write(mount, 'doomed', 'x');
      await release(id);
      await ws.sync(id);
      await ws.delete(id);
      assert.ok(!(await ws.list()).includes(id));
      await assert.rejects(ws.open(id), { code: 'WORKSPACE_NOT_FOUND' });
      await assert.rejects(ws.snapshots(id), { code: 'WORKSPACE_NOT_FOUND' });
      await ws.delete(id);
      if (residue) assert.deepEqual(await residue(id), []);
      // Its id can be used again, and starts empty.
      await ws.create(id, {});
      assert.deepEqual(await ws.snapshots(id), [], 'no snapshot of the deleted one');
      assert.equal(await contentOf(id, 'doomed'), undefined);
    });

    it('lists the workspaces it holds', async () => {
      const a = newId();
      const b = newId();
      await ws.create(a, {});
      await ws.create(b, { base: a });
      const listed = await ws.list();
      assert.ok(listed.includes(a) && listed.includes(b));
      await ws.delete(a);
      assert.ok(!(await ws.list()).includes(a));
      assert.ok((await ws.list()).includes(b));
    });
  });
}
