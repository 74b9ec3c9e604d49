// Core logic against fakes: the FakeRuntime, an in-memory SQLite store and a manual clock.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { Quotas, RoostError, SandboxService, type ExecSession, type Store } from '@roost/core';
import { newId } from '@roost/roostd';
import { openSqliteStore } from '@roost/store-sqlite';
import { FakeRuntime } from './fake-runtime.js';
import { drainOutput, silentLogger } from './test-deps.js';
import { ManualClock } from './manual-clock.js';
import { roomyQuota } from './quota-fixtures.js';


const drain = (session: ExecSession) => drainOutput(session.output);

describe('SandboxService', () => {
  let store: Store;
  let runtime: FakeRuntime;
  let clock: ManualClock;
  let service: SandboxService;
  const owner = 'usr_1';

  beforeEach(async () => {
    store = await openSqliteStore({ path: ':memory:' });
    await store.createUser({ id: owner, name: 'alice', isAdmin: false, createdAt: new Date() });
    await store.createUser({ id: 'usr_2', name: 'bob', isAdmin: false, createdAt: new Date() });
    runtime = new FakeRuntime();
    clock = new ManualClock();
    service = new SandboxService({
      store,
      runtime,
      clock,
      logger: silentLogger,
      newId,
      defaults: { image: 'debian', limits: { cpus: 1, memoryMb: 512, pids: 256, openFiles: 1024 }, network: 'none' },
      quotas: new Quotas({ store, defaults: roomyQuota, now: () => clock.now() }),
    });
  });
  afterEach(async () => {
    await runtime.close();
    await store.close();
  });

  it('runs a script, logs its output and removes a one-shot sandbox afterwards', async () => {
    const session = await service.run(owner, { script: 'echo out; echo err >&2; exit 4' });
    assert.deepEqual(await drain(session), { stdout: 'out\n', stderr: 'err\n' });
    assert.equal((await session.done).exitCode, 4);
    const record = await service.get(owner, session.sandbox.id);
    assert.equal(record.status, 'completed');
    assert.equal(record.exitCode, 4);
    await service.settle();
    assert.deepEqual(await runtime.list(), []);
    const logged = [];
    for await (const chunk of service.logs.read(record, { follow: false })) logged.push(Buffer.from(chunk.data).toString());
    assert.deepEqual(logged.sort(), ['err\n', 'out\n']);
  });

  it('has logs for runs only: a sandbox made by create and used by exec is refused with NO_RUN_LOGS', async () => {
    const made = await service.create(owner, { name: 'made' });
    await drain(await service.exec(owner, 'made', { command: ['echo', 'hi'] }));
    await assert.rejects(service.getWithLogs(owner, 'made'), (error: RoostError) => {
      assert.equal(error.code, 'NO_RUN_LOGS');
      assert.match(error.message, /sandbox made has no logs/);
      return true;
    });
    assert.equal((await service.get(owner, made.id)).exitCode, null);

    // A silent run has logs all the same (nothing in them), kept or one-shot.
    for (const persistent of [true, false]) {
      const session = await service.run(owner, { script: 'true', persistent });
      assert.equal((await service.getWithLogs(owner, session.sandbox.id)).id, session.sandbox.id, 'while it runs');
      await drain(session);
      await session.done;
      assert.equal((await service.getWithLogs(owner, session.sandbox.id)).id, session.sandbox.id, 'after it ended');
    }
  });

  it('kills a script at its timeout with exit code 124 and says why', async () => {
    const session = await service.run(owner, { script: 'sleep 30', timeoutSec: 5 });
    const output = drain(session);
    clock.advance(5000);
    const result = await session.done;
    await output;
    assert.equal(result.exitCode, 124);
    assert.equal(result.reason, 'timed out after 5 s');
    assert.equal((await service.get(owner, session.sandbox.id)).statusReason, 'timed out after 5 s');
  });

  it('marks a cancelled run as error and removes its sandbox', async () => {
    const session = await service.run(owner, { script: 'sleep 30' });
    const output = drain(session);
    session.cancel('client disconnected');
    await session.done;
    await output;
    const record = await service.get(owner, session.sandbox.id);
    assert.equal(record.status, 'error');
    assert.equal(record.statusReason, 'client disconnected');
    await service.settle();
    assert.deepEqual(await runtime.list(), []);
  });

  it('refuses invalid and taken names, frees a name when its run ended', async () => {
    await assert.rejects(service.create(owner, { name: '-bad' }), { code: 'INVALID_SANDBOX_NAME' });
    await assert.rejects(service.create(owner, { name: 'a'.repeat(64) }), { code: 'INVALID_SANDBOX_NAME' });
    await service.create(owner, { name: 'box' });
    await assert.rejects(service.create(owner, { name: 'box' }), { code: 'SANDBOX_NAME_TAKEN' });
    const run = await service.run(owner, { script: 'true', name: 'once' });
    await drain(run);
    await run.done;
    const again = await service.create(owner, { name: 'once' });
    assert.equal((await service.get(owner, 'once')).id, again.id, 'the live sandbox wins the name');
  });

  it("hides another owner's sandboxes behind SANDBOX_NOT_FOUND", async () => {
    const box = await service.create(owner, { name: 'mine' });
    await assert.rejects(service.get('usr_2', box.id), (error: RoostError) => error.code === 'SANDBOX_NOT_FOUND');
    await assert.rejects(service.exec('usr_2', box.id, { command: ['true'] }), { code: 'SANDBOX_NOT_FOUND' });
    await assert.rejects(service.remove('usr_2', 'mine'), { code: 'SANDBOX_NOT_FOUND' });
    assert.deepEqual(await service.list('usr_2', { all: true }), []);
  });

  it('reconciles after a restart: removes cut-short runs and unknown runtime sandboxes', async () => {
    const kept = await service.create(owner, { name: 'kept' });
    const run = await service.create(owner, { name: 'cut', persistent: false });
    await runtime.create({ id: 'sb_stray', hostname: 'stray', image: 'debian', limits: { cpus: 1, memoryMb: 64, pids: 64, openFiles: 1024 }, network: 'none', env: {}, idRange: 99 });
    await service.reconcile();
    assert.deepEqual((await runtime.list()).sort(), [kept.id]);
    const cut = await service.get(owner, run.id);
    assert.equal(cut.status, 'error');
    assert.match(cut.statusReason ?? '', /restarted/);
  });

  it('refuses limits the runtime cannot give and egress the daemon does not allow, before making anything', async () => {
    const strict = new SandboxService({
      store,
      runtime: new FakeRuntime({ maxOpenFiles: 20_000, natAllowed: false }),
      clock,
      logger: silentLogger,
      newId,
      defaults: { image: 'debian', limits: { cpus: 1, memoryMb: 512, pids: 256, openFiles: 1024 }, network: 'none' },
      quotas: new Quotas({ store, defaults: roomyQuota, now: () => clock.now() }),
    });
    await assert.rejects(strict.create(owner, { openFiles: 20_001 }), (error: RoostError) => {
      assert.equal(error.code, 'LIMIT_TOO_HIGH');
      assert.match(error.message, /20001 is more than this host can give \(20000\)/);
      return true;
    });
    await assert.rejects(strict.create(owner, { network: 'nat' }), { code: 'NETWORK_NOT_ALLOWED' });
    assert.deepEqual(await strict.list(owner, { all: true }), []);
  });
});
