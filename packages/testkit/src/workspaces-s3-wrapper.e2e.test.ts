// openS3Workspaces around a local implementation, against a real s3rver. The local side here is
// a plain-directory stand-in with the local adapter's store hooks (snapshots by `cp -a`), so the
// wrapper's rules are tested before the btrfs adapter is merged: restore when the local copy is
// missing or older, release acknowledged or "not yet safe", sync state, delete in the store.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { RoostError, isRoostError, type Quiesce, type WorkspaceMount, type WorkspaceSnapshot } from '@roost/core';
import { openS3Workspaces, s3ConfigFromEnv, SyncEngine, type LocalWorkspacesForStore, type StagedWorkspace } from '@roost/workspaces-s3';
import { startS3, type TestS3 } from './s3-server.js';

/** Directories instead of btrfs subvolumes; same hooks as adapters/workspaces-local. */
class DirWorkspaces implements LocalWorkspacesForStore {
  readonly info = { kind: 'local', diskLimits: false };
  private counter = 0;
  private readonly inUse = new Set<string>();
  constructor(private readonly root: string) {}
  dir = (id: string) => join(this.root, 'ws', id);
  snapshotDir = (id: string, snapshotId: string) => join(this.root, 'snap', id, snapshotId);
  exists = (id: string) => existsSync(this.dir(id));
  isOpen = (id: string) => this.inUse.has(id);
  hold = () => () => {};
  async create(id: string): Promise<void> {
    if (this.exists(id)) throw new RoostError('WORKSPACE_EXISTS', id);
    mkdirSync(join(this.dir(id), 'upper'), { recursive: true });
    mkdirSync(join(this.dir(id), 'work'));
  }
  async open(id: string): Promise<WorkspaceMount> {
    if (!this.exists(id)) throw new RoostError('WORKSPACE_NOT_FOUND', id);
    this.inUse.add(id);
    return { dir: this.dir(id), lowers: [] };
  }
  async release(id: string): Promise<void> {
    this.inUse.delete(id);
  }
  async fork(): Promise<void> {
    throw new Error('not in this stand-in');
  }
  async sync(id: string, opts: { quiesce?: Quiesce } = {}): Promise<WorkspaceSnapshot> {
    const snapshotId = `s${Date.now()}-${String(this.counter++).padStart(3, '0')}`;
    mkdirSync(join(this.root, 'snap', id), { recursive: true });
    const take = async () => execFileSync('cp', ['-a', this.dir(id), this.snapshotDir(id, snapshotId)]);
    if (opts.quiesce) await opts.quiesce(take);
    else await take();
    return { id: snapshotId, takenAt: new Date(), bytes: 0, files: 0 };
  }
  async snapshots(id: string): Promise<WorkspaceSnapshot[]> {
    const dir = join(this.root, 'snap', id);
    if (!existsSync(dir)) return [];
    return readdirSync(dir).map((s) => ({ id: s, takenAt: new Date(Number(s.slice(1, 14))), bytes: 0, files: 0 }));
  }
  async restore(): Promise<void> {}
  async resize(): Promise<void> {}
  async usage() {
    return { usedBytes: 0, limitBytes: null };
  }
  async syncState() {
    return { lastSyncedAt: null, pendingBytes: null, failingSince: null, failure: null };
  }
  async delete(id: string): Promise<void> {
    rmSync(this.dir(id), { recursive: true, force: true });
    rmSync(join(this.root, 'snap', id), { recursive: true, force: true });
  }
  async list(): Promise<string[]> {
    return existsSync(join(this.root, 'ws')) ? readdirSync(join(this.root, 'ws')) : [];
  }
  async close(): Promise<void> {}
  async restoreInto(id: string): Promise<StagedWorkspace> {
    const dir = join(this.root, `staged-${id}-${this.counter++}`);
    mkdirSync(join(dir, 'upper'), { recursive: true });
    mkdirSync(join(dir, 'work'));
    return { id, dir };
  }
  async commitRestore(staged: StagedWorkspace): Promise<void> {
    if (this.inUse.has(staged.id)) throw new RoostError('WORKSPACE_IN_USE', staged.id);
    rmSync(this.dir(staged.id), { recursive: true, force: true });
    mkdirSync(join(this.root, 'ws'), { recursive: true });
    execFileSync('mv', [staged.dir, this.dir(staged.id)]);
  }
  async abortRestore(staged: StagedWorkspace): Promise<void> {
    rmSync(staged.dir, { recursive: true, force: true });
  }
}

describe('S3 Workspaces around a local implementation (real s3rver)', () => {
  let s3: TestS3;
  let work: string;
  const opened: { close(): Promise<void> }[] = [];
  const machine = (name: string) => {
    const local = new DirWorkspaces(join(work, name));
    const engine = new SyncEngine({
      store: s3ConfigFromEnv({ ...s3.env, ROOST_S3_MAX_ATTEMPTS: '2' })!,
      cacheDir: join(work, name, 'cache'),
      keepSnapshots: 3,
    });
    const workspaces = openS3Workspaces({ local, s3: engine, stateDir: join(work, name, 'state') });
    opened.push(workspaces);
    return { local, workspaces };
  };

  before(async () => {
    s3 = await startS3();
    work = mkdtempSync(join(tmpdir(), 'roost-ws-s3-wrap-'));
  });
  after(async () => {
    for (const w of opened) await w.close();
    await s3?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('opens a workspace on another machine from the store, and a newer store snapshot replaces an older local copy', async () => {
    const a = machine('a');
    await a.workspaces.create('moving', {});
    const mount = await a.workspaces.open('moving');
    writeFileSync(join(mount.dir, 'upper', 'notes.txt'), 'written on machine a');
    let quiesced = 0;
    await a.workspaces.sync('moving', { quiesce: async (capture) => (quiesced++, capture()) });
    assert.equal(quiesced, 1, 'the snapshot was taken under quiesce');
    await a.workspaces.release('moving');
    assert.ok((await a.workspaces.syncState('moving')).lastSyncedAt);

    const b = machine('b');
    assert.equal(b.local.exists('moving'), false);
    const there = await b.workspaces.open('moving');
    assert.equal(readFileSync(join(there.dir, 'upper', 'notes.txt'), 'utf8'), 'written on machine a');
    writeFileSync(join(there.dir, 'upper', 'notes.txt'), 'changed on machine b');
    await b.workspaces.release('moving');

    // Back on a: its local copy is older than the store's newest, so open restores.
    const back = await a.workspaces.open('moving');
    assert.equal(readFileSync(join(back.dir, 'upper', 'notes.txt'), 'utf8'), 'changed on machine b');
    await a.workspaces.release('moving');
    const snapshots = await a.workspaces.snapshots('moving');
    assert.equal(snapshots.length, 3);
  });

  it('release while the store is down rejects "not yet safe", keeps the local copy, and the state says failing; it catches up after', async () => {
    const { local, workspaces } = machine('c');
    await workspaces.create('outage', {});
    const mount = await workspaces.open('outage');
    writeFileSync(join(mount.dir, 'upper', 'precious.txt'), 'must not be lost');
    await s3.pause();
    try {
      const error = await workspaces.release('outage').then(
        () => null,
        (e: unknown) => e,
      );
      assert.ok(isRoostError(error), String(error));
      assert.equal(error.code, 'WORKSPACE_SYNC_FAILED');
      assert.match(error.message, /not yet safe in the store/);
      assert.equal(readFileSync(join(local.dir('outage'), 'upper', 'precious.txt'), 'utf8'), 'must not be lost');
      const state = await workspaces.syncState('outage');
      assert.ok(state.failingSince instanceof Date);
      assert.match(state.failure ?? '', /unreachable/);
      // Opening again with the store down: the local copy, as it is.
      const again = await workspaces.open('outage');
      assert.equal(readFileSync(join(again.dir, 'upper', 'precious.txt'), 'utf8'), 'must not be lost');
      await local.release('outage');
    } finally {
      await s3.start();
    }
    await workspaces.release('outage');
    const state = await workspaces.syncState('outage');
    assert.equal(state.failingSince, null);
    assert.ok(state.lastSyncedAt);
    assert.equal((await workspaces.snapshots('outage')).length, 1);
  });

  it('never opens a workspace empty when its store snapshot cannot be read, and delete removes the store copy', async () => {
    const a = machine('d');
    await a.workspaces.create('broken', {});
    const mount = await a.workspaces.open('broken');
    writeFileSync(join(mount.dir, 'upper', 'data.bin'), Buffer.alloc(200_000, 1));
    await a.workspaces.release('broken');
    const hash = execFileSync('sha256sum', [join(mount.dir, 'upper', 'data.bin')]).toString().split(' ')[0]!;
    rmSync(s3.objectFile(`chunks/${hash.slice(0, 2)}/${hash}`));

    const b = machine('e');
    await assert.rejects(b.workspaces.open('broken'), { code: 'WORKSPACE_UNREADABLE' });
    assert.equal(b.local.exists('broken'), false, 'no empty workspace made');

    assert.ok(existsSync(join(s3.dir, s3.bucket, 'workspaces', 'broken')), 'the store holds it before delete');
    await a.workspaces.delete('broken');
    await assert.rejects(a.workspaces.snapshots('broken'), { code: 'WORKSPACE_NOT_FOUND' });
    assert.ok(!existsSync(join(s3.dir, s3.bucket, 'workspaces', 'broken')), 'pointer and manifests gone from the store');
    assert.equal(a.local.exists('broken'), false);
  });
});
