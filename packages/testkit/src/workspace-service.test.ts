// The workspace rules of core against fakes: FakeRuntime (execs run in the mounted workspace's
// upper dir), FakeWorkspaces (temp dirs, syncs that can fail), an in-memory SQLite store and a
// manual clock (periodic syncs without sleeping).
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { Quotas, RoostError, SandboxService, WorkspaceService, type ExecSession, type Store } from '@roost/core';
import { newId } from '@roost/roostd';
import { openSqliteStore } from '@roost/store-sqlite';
import { FakeRuntime } from './fake-runtime.js';
import { FakeWorkspaces } from './fake-workspaces.js';
import { drainOutput, silentLogger } from './test-deps.js';
import { ManualClock } from './manual-clock.js';
import { roomyQuota } from './quota-fixtures.js';

const drain = (session: ExecSession) => drainOutput(session.output);
const code = (expected: string, message?: RegExp) => (error: RoostError) => {
  assert.equal(error.code, expected, error.message);
  if (message) assert.match(error.message, message);
  return true;
};

describe('Workspaces in core', () => {
  let store: Store;
  let runtime: FakeRuntime;
  let fake: FakeWorkspaces;
  let clock: ManualClock;
  let workspaces: WorkspaceService;
  let service: SandboxService;
  const owner = 'usr_1';

  beforeEach(async () => {
    store = await openSqliteStore({ path: ':memory:' });
    await store.createUser({ id: owner, name: 'alice', isAdmin: false, createdAt: new Date() });
    await store.createUser({ id: 'usr_2', name: 'bob', isAdmin: false, createdAt: new Date() });
    runtime = new FakeRuntime();
    clock = new ManualClock();
    fake = new FakeWorkspaces({ now: () => clock.now() });
    workspaces = new WorkspaceService({ store, workspaces: fake, runtime, clock, logger: silentLogger, newId, syncIntervalMs: 30_000 });
    service = new SandboxService({
      store,
      runtime,
      clock,
      logger: silentLogger,
      newId,
      defaults: { image: 'debian', limits: { cpus: 1, memoryMb: 512, pids: 256, openFiles: 1024 }, network: 'none' },
      quotas: new Quotas({ store, defaults: roomyQuota, now: () => clock.now() }),
      workspaces,
    });
  });
  afterEach(async () => {
    await workspaces.close();
    await runtime.close();
    await store.close();
    fake.dispose();
  });

  const run = async (script: string, opts: Record<string, unknown> = {}) => {
    const session = await service.run(owner, { script, ...opts });
    const output = await drain(session);
    const result = await session.done;
    await service.settle();
    return { ...output, exitCode: result.exitCode, sandbox: await session.ended };
  };

  it('run -w keeps what a run wrote for the next run of that workspace; made on first use', async () => {
    const first = await run('echo pkg > installed', { workspace: 'proj' });
    assert.equal(first.exitCode, 0);
    const [record] = await workspaces.list(owner);
    assert.equal(record?.record.name, 'proj');
    assert.match(record!.record.id, /^ws_/);
    assert.equal(first.sandbox.workspaceId, record!.record.id);
    const second = await run('cat installed', { workspace: 'proj' });
    assert.equal(second.stdout, 'pkg\n');
    // The release's final sync ran after each run: the store has it.
    assert.equal((await fake.snapshots(record!.record.id)).length, 2);
  });

  it('two first runs of one workspace at once: one makes it, the other finds it (or is told it is in use), never a twin', async () => {
    const results = await Promise.allSettled([service.create(owner, { name: 'a', workspace: 'same' }), service.create(owner, { name: 'b', workspace: 'same' })]);
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    const refused = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    assert.equal((refused.reason as RoostError).code, 'WORKSPACE_IN_USE');
    assert.equal((await workspaces.list(owner)).length, 1);
  });

  it('without -w a one-shot run leaves no workspace and still refuses --base/--disk alone', async () => {
    await run('echo x > f');
    assert.deepEqual(await workspaces.list(owner), []);
    assert.deepEqual(await fake.list(), []);
    await assert.rejects(service.run(owner, { script: 'true', diskBytes: 1e9 }), code('VALIDATION_FAILED', /-w/));
  });

  it('new <name> gets a workspace of its name: stop and start keep its files; rm keeps the workspace', async () => {
    const dev = await service.create(owner, { name: 'dev' });
    assert.ok(dev.workspaceId);
    await drain(await service.exec(owner, 'dev', { command: ['bash', '-c', 'echo kept > notes'] }));
    const stopped = await service.stop(owner, 'dev');
    assert.equal(stopped.statusReason, 'stopped by its owner');
    assert.equal(fake.inUse(dev.workspaceId!), false);
    await service.start(owner, 'dev');
    assert.deepEqual(await drain(await service.exec(owner, 'dev', { command: ['cat', 'notes'] })), { stdout: 'kept\n', stderr: '' });
    await service.remove(owner, 'dev');
    const kept = await workspaces.show(owner, 'dev');
    assert.equal(kept.usedBy, null);
    assert.equal(readFileSync(join(fake.upperDir(dev.workspaceId!), 'notes'), 'utf8'), 'kept\n');
    // A new `dev` finds it again.
    const again = await service.create(owner, { name: 'dev' });
    assert.equal(again.workspaceId, dev.workspaceId);
  });

  it('a workspace is mounted by one live sandbox at a time, and the refusal names it', async () => {
    await service.create(owner, { name: 'dev' });
    await assert.rejects(service.create(owner, { name: 'other', workspace: 'dev' }), code('WORKSPACE_IN_USE', /sandbox dev \(sb_/));
    await assert.rejects(service.run(owner, { script: 'true', workspace: 'dev' }), code('WORKSPACE_IN_USE'));
    // Nothing of the refused ones stays live, and the workspace was not made twice.
    assert.equal((await service.list(owner)).length, 1);
    assert.equal((await workspaces.list(owner)).length, 1);
    // Once dev stopped, another sandbox may mount it; then dev cannot start.
    await service.stop(owner, 'dev');
    await service.create(owner, { name: 'other', workspace: 'dev' });
    await assert.rejects(service.start(owner, 'dev'), code('WORKSPACE_IN_USE', /sandbox other/));
    // Another owner's workspace of the same name is another workspace.
    const bobs = await service.create('usr_2', { name: 'dev' });
    assert.notEqual(bobs.workspaceId, (await workspaces.get(owner, 'dev')).id);
  });

  it('workspace rm is refused while a sandbox uses it, and removes files and record after', async () => {
    const dev = await service.create(owner, { name: 'dev' });
    await assert.rejects(workspaces.remove(owner, 'dev'), code('WORKSPACE_IN_USE', /sandbox dev/));
    await service.stop(owner, 'dev');
    await assert.rejects(workspaces.remove(owner, 'dev'), code('WORKSPACE_IN_USE', /stopped/));
    await service.remove(owner, 'dev');
    await workspaces.remove(owner, 'dev');
    assert.equal(existsSync(fake.upperDir(dev.workspaceId!)), false);
    await assert.rejects(workspaces.get(owner, 'dev'), code('WORKSPACE_NOT_FOUND'));
  });

  it('--base forks a new workspace from another; writes never change the base; --base of an existing one is refused', async () => {
    await run('echo base > f', { workspace: 'base' });
    const child = await run('cat f; echo child > f', { workspace: 'child', baseWorkspace: 'base' });
    assert.equal(child.stdout, 'base\n');
    assert.equal((await run('cat f', { workspace: 'base' })).stdout, 'base\n');
    assert.equal((await workspaces.get(owner, 'child')).baseId, (await workspaces.get(owner, 'base')).id);
    await assert.rejects(service.run(owner, { script: 'true', workspace: 'child', baseWorkspace: 'base' }), code('WORKSPACE_NAME_TAKEN', /--base/));
    await assert.rejects(service.run(owner, { script: 'true', workspace: 'new', baseWorkspace: 'nope' }), code('WORKSPACE_NOT_FOUND'));
    assert.equal((await workspaces.list(owner)).some((view) => view.record.name === 'new'), false);
  });

  it('fork of a running sandbox\'s workspace freezes it around the capture and thaws it, also when the capture fails', async () => {
    const dev = await service.create(owner, { name: 'dev' });
    await drain(await service.exec(owner, 'dev', { command: ['bash', '-c', 'echo just-now > f'] }));
    await workspaces.fork(owner, 'dev', 'copy');
    assert.deepEqual(fake.quiesced, [`fork ${dev.workspaceId}`]);
    assert.deepEqual([...runtime.frozen], []);
    assert.equal(readFileSync(join(fake.upperDir((await workspaces.get(owner, 'copy')).id), 'f'), 'utf8'), 'just-now\n');
    // A capture that fails (the name is taken in the port) still thaws.
    await assert.rejects(workspaces.fork(owner, 'dev', 'copy'), code('WORKSPACE_NAME_TAKEN'));
    fake.failSyncs('store down');
    await assert.rejects(service.sync(owner, 'dev'), code('WORKSPACE_SYNC_FAILED'));
    assert.deepEqual([...runtime.frozen], []);
  });

  it('restore puts a snapshot back, refused while a live sandbox mounts the workspace', async () => {
    const dev = await service.create(owner, { name: 'dev' });
    await drain(await service.exec(owner, 'dev', { command: ['bash', '-c', 'echo v1 > f'] }));
    const { snapshot } = await service.sync(owner, 'dev');
    await drain(await service.exec(owner, 'dev', { command: ['bash', '-c', 'echo v2 > f'] }));
    await assert.rejects(workspaces.restore(owner, 'dev', snapshot.id), code('WORKSPACE_IN_USE', /stop it first/));
    await service.stop(owner, 'dev');
    await workspaces.restore(owner, 'dev', snapshot.id);
    await service.start(owner, 'dev');
    assert.equal((await drain(await service.exec(owner, 'dev', { command: ['cat', 'f'] }))).stdout, 'v1\n');
    assert.ok(dev);
  });

  it('stop reports a failed final sync in its answer and in status, and keeps the local copy', async () => {
    const dev = await service.create(owner, { name: 'dev' });
    await drain(await service.exec(owner, 'dev', { command: ['bash', '-c', 'echo precious > f'] }));
    fake.failSyncs('connect ECONNREFUSED 127.0.0.1:9000');
    const stopped = await service.stop(owner, 'dev');
    assert.equal(stopped.status, 'stopped');
    assert.match(stopped.statusReason!, /not yet safe in the store: .*ECONNREFUSED/);
    const view = await service.workspaceOf(stopped);
    assert.match(view!.sync.failure!, /ECONNREFUSED/);
    assert.ok(view!.sync.failingSince);
    assert.equal(readFileSync(join(fake.upperDir(dev.workspaceId!), 'f'), 'utf8'), 'precious\n');
  });

  it('syncs a running sandbox every syncIntervalMs on the clock, never two at once, and keeps failures for status', async () => {
    const dev = await service.create(owner, { name: 'dev' });
    const ws = dev.workspaceId!;
    assert.equal(fake.syncCount, 0);
    clock.advance(30_000);
    await workspaces.settle();
    assert.equal(fake.syncCount, 1);
    assert.deepEqual(fake.quiesced, [`sync ${ws}`]);
    // A slow sync: the next rounds are skipped while it runs.
    let open!: () => void;
    fake.syncGate = new Promise((resolve) => (open = resolve));
    clock.advance(30_000);
    clock.advance(30_000);
    clock.advance(30_000);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(fake.syncCount, 2);
    open();
    fake.syncGate = null;
    await workspaces.settle();
    assert.equal(fake.maxConcurrentSyncs, 1);
    // Failures go to status; the next good round clears them.
    fake.failSyncs('bucket gone');
    clock.advance(30_000);
    await workspaces.settle();
    const failing = (await service.workspaceOf(dev))!.sync;
    assert.equal(failing.failure, 'bucket gone');
    assert.deepEqual(failing.failingSince, clock.now());
    fake.failSyncs(null);
    clock.advance(30_000);
    await workspaces.settle();
    assert.equal((await service.workspaceOf(dev))!.sync.failure, null);
    // Stopped: no more rounds.
    await service.stop(owner, 'dev');
    const count = fake.syncCount;
    clock.advance(300_000);
    await workspaces.settle();
    assert.equal(fake.syncCount, count);
  });

  it('after a restart: a kept sandbox is synced again on schedule; one whose processes died releases its workspace', async () => {
    const kept = await service.create(owner, { name: 'kept' });
    const died = await service.create(owner, { name: 'died' });
    await workspaces.close();
    await runtime.destroy(died.id);
    workspaces = new WorkspaceService({ store, workspaces: fake, runtime, clock, logger: silentLogger, newId, syncIntervalMs: 30_000 });
    const restarted = new SandboxService({
      store,
      runtime,
      clock,
      logger: silentLogger,
      newId,
      defaults: { image: 'debian', limits: { cpus: 1, memoryMb: 512, pids: 256, openFiles: 1024 }, network: 'none' },
      quotas: new Quotas({ store, defaults: roomyQuota, now: () => clock.now() }),
      workspaces,
    });
    await restarted.reconcile();
    assert.equal((await restarted.get(owner, 'died')).status, 'stopped');
    assert.equal(fake.inUse(died.workspaceId!), false);
    const before = fake.quiesced.length;
    clock.advance(30_000);
    await workspaces.settle();
    assert.deepEqual(fake.quiesced.slice(before), [`sync ${kept.workspaceId}`]);
  });

  it('resize records the new size; --disk on run -w sizes a new workspace; sizes below use are refused', async () => {
    await run('head -c 1000 /dev/zero > f', { workspace: 'sized', diskBytes: 5_000_000_000 });
    const record = await workspaces.get(owner, 'sized');
    assert.equal(record.diskBytes, 5_000_000_000);
    assert.equal(fake.diskBytesOf(record.id), 5_000_000_000);
    await service.create(owner, { name: 'dev', workspace: 'sized' });
    await service.resize(owner, 'dev', 2_000_000_000);
    assert.equal((await workspaces.get(owner, 'sized')).diskBytes, 2_000_000_000);
    assert.deepEqual((await workspaces.show(owner, 'sized')).usage, { usedBytes: 1000, limitBytes: 2_000_000_000 });
    await assert.rejects(service.resize(owner, 'dev', 10), code('DISK_TOO_SMALL'));
  });

  it('a workspace quota refuses past its count and size', async () => {
    const limited = new WorkspaceService({ store, workspaces: fake, runtime, clock, logger: silentLogger, newId, syncIntervalMs: 0, quota: { workspaces: 2, diskBytes: 3e9 } });
    await limited.create(owner, 'a', { diskBytes: 2e9 });
    await assert.rejects(limited.create(owner, 'b', { diskBytes: 2e9 }), code('QUOTA_EXCEEDED', /disk: 2 GB of 3 GB/));
    await limited.create(owner, 'b');
    await assert.rejects(limited.create(owner, 'c'), code('QUOTA_EXCEEDED', /workspaces: 2 of 2/));
    await limited.close();
  });
});
