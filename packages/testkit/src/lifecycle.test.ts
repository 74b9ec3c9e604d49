// The life cycle after create, in core over the FakeRuntime, an in-memory SQLite store and a
// manual clock: stop and start again, names held by stopped sandboxes, name lookups that never
// pick between records, ended runs under a retention limit, prune, and limits of a live sandbox.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { Quotas, SandboxService, type ExecSession, type QuotaLimits, type RunRetention, type Store, type UserRecord } from '@roost/core';
import { newId } from '@roost/roostd';
import { openSqliteStore } from '@roost/store-sqlite';
import { FakeRuntime } from './fake-runtime.js';
import { ManualClock } from './manual-clock.js';
import { roomyQuota } from './quota-fixtures.js';
import { drainOutput, silentLogger } from './test-deps.js';

const sandboxLimits = { cpus: 1, memoryMb: 512, pids: 256, openFiles: 1024 };

async function drain(session: ExecSession) {
  return { ...(await drainOutput(session.output)), exit: await session.done };
}

describe('sandbox life cycle', () => {
  let store: Store;
  let runtime: FakeRuntime;
  let clock: ManualClock;
  let service: SandboxService;
  const alice: UserRecord = { id: 'usr_alice', name: 'alice', isAdmin: false, createdAt: new Date() };
  const bob: UserRecord = { id: 'usr_bob', name: 'bob', isAdmin: false, createdAt: new Date() };

  function build(opts: { quota?: Partial<QuotaLimits>; retention?: RunRetention } = {}) {
    service = new SandboxService({
      store,
      runtime,
      clock,
      logger: silentLogger,
      newId,
      quotas: new Quotas({ store, defaults: { ...roomyQuota, ...opts.quota }, now: () => clock.now() }),
      runRetention: opts.retention,
      defaults: { image: 'debian', limits: sandboxLimits, network: 'none' },
    });
  }

  /** A one-shot run that prints `bytes` bytes, one clock second after the last. */
  async function runPrinting(owner: string, name: string, bytes = 0) {
    clock.advance(1000);
    const session = await service.run(owner, { name, script: `head -c ${bytes} /dev/zero` });
    await drain(session);
    return session.sandbox.id;
  }

  beforeEach(async () => {
    store = await openSqliteStore({ path: ':memory:' });
    for (const user of [alice, bob]) await store.createUser(user);
    runtime = new FakeRuntime();
    clock = new ManualClock();
    build();
  });
  afterEach(async () => {
    await service.settle();
    await runtime.close();
    await store.close();
  });

  it('start runs a stopped sandbox again with its id, name, settings, limits and egress rules', async () => {
    const made = await service.create(alice.id, {
      name: 'dev', cpus: 0.5, memoryMb: 300, pids: 99, openFiles: 2000, env: { A: '1' }, network: 'nat', allowNet: ['example.com'],
    });
    await service.stop(alice.id, 'dev');
    assert.deepEqual(await runtime.list(), []);
    assert.deepEqual(await store.listIdRanges(), [], 'a stopped sandbox holds no id range');
    const started = await service.start(alice.id, 'dev');
    assert.equal(started.id, made.id);
    assert.equal(started.status, 'running');
    assert.equal(started.statusReason, null);
    assert.deepEqual(started.limits, made.limits);
    assert.deepEqual(started.egress, made.egress);
    assert.deepEqual(await runtime.list(), [made.id]);
    assert.deepEqual(runtime.egressRules.get(made.id) ?? made.egress, made.egress);
    assert.deepEqual((await store.listIdRanges()).map((range) => range.holderId), [made.id]);
    const exec = await drain(await service.exec(alice.id, 'dev', { command: ['sh', '-c', 'echo "$A $HOSTNAME"'] }));
    assert.equal(exec.stdout, '1 dev\n');
    // Starting a running one changes nothing.
    assert.equal((await service.start(alice.id, 'dev')).status, 'running');
    assert.deepEqual(await runtime.list(), [made.id]);
  });

  it('restart stops and starts a running sandbox; an ended run does not start again', async () => {
    const made = await service.create(alice.id, { name: 'dev' });
    await drain(await service.exec(alice.id, 'dev', { command: ['sh', '-c', 'sleep 30 & echo started'] }));
    const restarted = await service.restart(alice.id, 'dev');
    assert.equal(restarted.id, made.id);
    assert.equal(restarted.status, 'running');
    await runPrinting(alice.id, 'job');
    await assert.rejects(service.start(alice.id, 'job'), { code: 'SANDBOX_ENDED' });
  });

  it('a stopped sandbox keeps its name; an ended run and a failed create do not', async () => {
    await service.create(alice.id, { name: 'dev' });
    await service.stop(alice.id, 'dev');
    await assert.rejects(service.create(alice.id, { name: 'dev' }), (error: Error & { code?: string }) => {
      assert.equal(error.code, 'SANDBOX_NAME_TAKEN');
      assert.match(error.message, /stopped sandbox named "dev"/);
      return true;
    });
    await assert.rejects(service.run(alice.id, { name: 'dev', script: 'true' }), { code: 'SANDBOX_NAME_TAKEN' });
    // Another user's names are their own.
    await service.create(bob.id, { name: 'dev' });
    // An ended run leaves its name free.
    await runPrinting(alice.id, 'job');
    await service.create(alice.id, { name: 'job' });
    // So does a create that failed.
    const create = runtime.create.bind(runtime);
    runtime.create = async () => {
      throw new Error('no room');
    };
    await assert.rejects(service.create(alice.id, { name: 'retry' }), { code: 'RUNTIME_FAILED' });
    runtime.create = create;
    const retried = await service.create(alice.id, { name: 'retry' });
    assert.equal((await service.get(alice.id, 'retry')).id, retried.id, 'the name means the one that holds it');
  });

  it('a name never picks silently between ended runs: several are refused, the id works', async () => {
    const first = await runPrinting(alice.id, 'job');
    assert.equal((await service.get(alice.id, 'job')).id, first);
    const second = await runPrinting(alice.id, 'job');
    await assert.rejects(service.get(alice.id, 'job'), (error: Error & { code?: string }) => {
      assert.equal(error.code, 'SANDBOX_NAME_AMBIGUOUS');
      assert.match(error.message, new RegExp(`2 ended runs are named "job": ${second}, ${first}`));
      return true;
    });
    assert.equal((await service.get(alice.id, second)).id, second);
  });

  it('start is checked against the quota like a create, and a failed start leaves it stopped and retryable', async () => {
    build({ quota: { sandboxes: 1 } });
    await service.create(alice.id, { name: 'one' });
    await service.stop(alice.id, 'one');
    await service.create(alice.id, { name: 'two' });
    await assert.rejects(service.start(alice.id, 'one'), { code: 'QUOTA_EXCEEDED' });
    assert.equal((await service.get(alice.id, 'one')).status, 'stopped');
    await service.remove(alice.id, 'two');
    const create = runtime.create.bind(runtime);
    runtime.create = async () => {
      throw new Error('disk full');
    };
    await assert.rejects(service.start(alice.id, 'one'), { code: 'RUNTIME_FAILED' });
    const failed = await service.get(alice.id, 'one');
    assert.equal(failed.status, 'stopped');
    assert.match(failed.statusReason ?? '', /could not start: disk full/);
    assert.deepEqual(await store.listIdRanges(), []);
    runtime.create = create;
    assert.equal((await service.start(alice.id, 'one')).status, 'running');
  });

  it('keeps at most `count` ended runs per user, the newest; the removed ones take their logs with them', async () => {
    build({ retention: { count: 2, bytes: 1024 * 1024 } });
    const ids = [];
    for (let i = 0; i < 4; i++) ids.push(await runPrinting(alice.id, `job-${i}`, 10));
    await runPrinting(bob.id, 'bobs', 10);
    const kept = (await service.list(alice.id, { all: true })).map((sandbox) => sandbox.id);
    assert.deepEqual(kept, [ids[3], ids[2]]);
    assert.equal((await store.usageOf(alice.id)).logBytes, 20, 'the removed runs\' logs are gone');
    assert.equal((await service.list(bob.id, { all: true })).length, 1, 'another user\'s runs are not touched');
  });

  it('keeps at most `bytes` of ended runs\' logs per user, but always the newest run', async () => {
    build({ retention: { count: 100, bytes: 1000 } });
    const small = await runPrinting(alice.id, 'small', 300);
    const medium = await runPrinting(alice.id, 'medium', 600);
    assert.deepEqual((await service.list(alice.id, { all: true })).map((s) => s.id), [medium, small]);
    const big = await runPrinting(alice.id, 'big', 5000);
    assert.deepEqual((await service.list(alice.id, { all: true })).map((s) => s.id), [big], 'the newest stays even past the limit');
    const logs = await drainOutput((async function* () {
      for await (const chunk of service.logs.read({ id: big, logTrimmedBytes: 0 }, { follow: false })) yield chunk;
    })());
    assert.equal(logs.stdout.length, 5000);
  });

  it('retention also applies at start-up (limits lowered since)', async () => {
    for (let i = 0; i < 3; i++) await runPrinting(alice.id, `job-${i}`);
    build({ retention: { count: 1, bytes: 1000 } });
    await service.reconcile();
    assert.equal((await service.list(alice.id, { all: true })).length, 1);
  });

  it('prune removes ended runs, with stopped also stopped sandboxes, never live ones', async () => {
    await service.create(alice.id, { name: 'live' });
    await service.create(alice.id, { name: 'parked' });
    await service.stop(alice.id, 'parked');
    const run = await runPrinting(alice.id, 'job', 10);
    await runPrinting(bob.id, 'bobs');
    const pruned = await service.prune(alice.id);
    assert.deepEqual(pruned.map((sandbox) => sandbox.id), [run]);
    assert.equal((await store.usageOf(alice.id)).logBytes, 0);
    assert.deepEqual((await service.list(alice.id, { all: true })).map((s) => s.name).sort(), ['live', 'parked']);
    const withStopped = await service.prune(alice.id, { stopped: true });
    assert.deepEqual(withStopped.map((sandbox) => sandbox.name), ['parked']);
    assert.deepEqual((await service.list(alice.id, { all: true })).map((s) => s.name), ['live']);
    assert.equal((await service.get(alice.id, 'live')).status, 'running');
    assert.equal((await service.list(bob.id, { all: true })).length, 1);
    assert.deepEqual(await service.prune(alice.id, { stopped: true }), []);
  });

  it('a run tells the sandbox as it ended: one-shot completed, persistent running with the script\'s exit', async () => {
    const oneShot = await service.run(alice.id, { script: 'exit 3' });
    assert.equal(oneShot.sandbox.status, 'running');
    await drain(oneShot);
    const ended = await oneShot.ended;
    assert.equal(ended.status, 'completed');
    assert.equal(ended.exitCode, 3);
    const kept = await service.run(alice.id, { script: 'exit 4', persistent: true });
    await drain(kept);
    const keptEnded = await kept.ended;
    assert.equal(keptEnded.status, 'running');
    assert.equal(keptEnded.exitCode, 4);
  });

  it('set changes the limits of a running sandbox in the runtime, within the quota of the new sums', async () => {
    build({ quota: { memoryMb: 1024, cpus: 2 } });
    const dev = await service.create(alice.id, { name: 'dev', memoryMb: 512, cpus: 1 });
    await service.create(alice.id, { name: 'other', memoryMb: 256, cpus: 0.5 });
    const changed = await service.update(alice.id, 'dev', { memoryMb: 768, cpus: 1.5, pids: 77, openFiles: 2000 });
    assert.deepEqual(changed.limits, { cpus: 1.5, memoryMb: 768, pids: 77, openFiles: 2000 });
    assert.deepEqual(runtime.limits.get(dev.id), changed.limits);
    // 768 + 256 = 1024 is the quota; one more MB is not.
    await assert.rejects(service.update(alice.id, 'dev', { memoryMb: 769 }), (error: Error & { code?: string }) => {
      assert.equal(error.code, 'QUOTA_EXCEEDED');
      assert.match(error.message, /memory: 256 MB of 1024 MB in use by 1 live sandbox; this sandbox asks 769 MB/);
      return true;
    });
    assert.equal((await service.get(alice.id, 'dev')).limits.memoryMb, 768, 'a refused change leaves the record');
    assert.equal(runtime.limits.get(dev.id)?.memoryMb, 768, 'and the runtime');
    await assert.rejects(service.update(alice.id, 'dev', { openFiles: runtime.info.maxOpenFiles + 1 }), { code: 'LIMIT_TOO_HIGH' });
    // A stopped sandbox gets its new limits at the next start (and no quota counts it meanwhile).
    await service.stop(alice.id, 'dev');
    await service.update(alice.id, 'dev', { memoryMb: 900 });
    await assert.rejects(service.start(alice.id, 'dev'), { code: 'QUOTA_EXCEEDED' });
    await service.update(alice.id, 'dev', { memoryMb: 700 });
    assert.equal((await service.start(alice.id, 'dev')).limits.memoryMb, 700);
  });
});
