// The warm pool: unit tests over the FakeRuntime, then the real driver with 50 parallel runs.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { Quotas, SandboxService, WarmPool, type SandboxSpec, type Store } from '@roost/core';
import { newId } from '@roost/roostd';
import type { CommandHandle } from '@roost/sdk';
import { openSqliteStore } from '@roost/store-sqlite';
import { FakeRuntime } from './fake-runtime.js';
import { silentLogger, wallClock, collectOutput } from './test-deps.js';
import { roomyQuota } from './quota-fixtures.js';
import { startDaemon, type TestDaemon } from './start-daemon.js';

/** A run's whole output and exit code. */
const limits = { cpus: 1, memoryMb: 512, pids: 256, openFiles: 1024 };

/** Counts what the pool asks of the runtime. */
class CountingRuntime extends FakeRuntime {
  created: SandboxSpec[] = [];
  configured: SandboxSpec[] = [];
  failCreates = 0;
  override async create(spec: SandboxSpec): Promise<void> {
    if (this.failCreates > 0) {
      this.failCreates--;
      throw new Error('no room');
    }
    this.created.push(spec);
    await super.create(spec);
  }
  override async configure(spec: SandboxSpec): Promise<void> {
    this.configured.push(spec);
    await super.configure(spec);
  }
}

describe('WarmPool with SandboxService', () => {
  let store: Store;
  let runtime: CountingRuntime;
  let pool: WarmPool;
  let service: SandboxService;
  const owner = 'usr_1';

  beforeEach(async () => {
    store = await openSqliteStore({ path: ':memory:' });
    await store.createUser({ id: owner, name: 'alice', isAdmin: true, createdAt: new Date() });
    runtime = new CountingRuntime();
    pool = new WarmPool({ runtime, idRanges: store, logger: silentLogger, newId, limits, sizes: { debian: 3 } });
    service = new SandboxService({
      store,
      runtime,
      clock: wallClock,
      logger: silentLogger,
      newId,
      pool,
      defaults: { image: 'debian', limits, network: 'none' },
      quotas: new Quotas({ store, defaults: roomyQuota, now: () => new Date() }),
    });
    pool.start();
    await pool.filled();
  });
  afterEach(async () => {
    await pool.close();
    await runtime.close();
    await store.close();
  });

  it('fills to its size in the background and refills after a claim', async () => {
    assert.deepEqual(pool.stats(), [{ image: 'debian', ready: 3, target: 3 }]);
    const members = pool.members();
    const sandbox = await service.create(owner, { name: 'claimed', env: { A: '1' } });
    assert.ok(members.includes(sandbox.id), 'the sandbox is a pool member');
    assert.deepEqual(runtime.configured.map((spec) => [spec.id, spec.hostname, spec.env]), [[sandbox.id, 'claimed', { A: '1' }]]);
    await pool.filled();
    assert.equal(pool.stats()[0]!.ready, 3);
    assert.equal(runtime.created.length, 4);
  });

  it('never hands one member to two claims: 50 parallel creates get 50 sandboxes', async () => {
    const sandboxes = await Promise.all(Array.from({ length: 50 }, (_, i) => service.create(owner, { name: `par-${i}` })));
    assert.equal(new Set(sandboxes.map((s) => s.id)).size, 50);
    const configuredIds = runtime.configured.map((spec) => spec.id);
    assert.equal(new Set(configuredIds).size, configuredIds.length, 'no member configured twice');
    assert.ok(configuredIds.length >= 3, `${configuredIds.length} came from the pool`);
    for (const [i, sandbox] of sandboxes.entries()) {
      const session = await service.exec(owner, sandbox.id, { command: ['sh', '-c', 'echo $HOSTNAME'] });
      let out = '';
      for await (const chunk of session.output) out += Buffer.from(chunk.data).toString();
      assert.equal(out, `par-${i}\n`);
    }
  });

  it('loses no member when the name is taken, and other images go cold', async () => {
    await service.create(owner, { name: 'dup' });
    await pool.filled();
    const before = pool.members();
    await assert.rejects(service.create(owner, { name: 'dup' }), { code: 'SANDBOX_NAME_TAKEN' });
    await pool.filled();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(pool.members().length, 3);
    assert.equal((await runtime.list()).length, 4, 'the three members and "dup", nothing more');
    const other = await service.create(owner, { name: 'other-image', image: 'alpine' });
    assert.ok(!before.includes(other.id));
    assert.equal(runtime.created.at(-1)!.image, 'alpine');
  });

  it('is not residue for the doctor, and close() removes the members nobody claimed', async () => {
    const admin = (await store.getUser(owner))!;
    assert.deepEqual((await service.diagnose(admin)).leftovers, []);
    await pool.close();
    assert.deepEqual(await runtime.list(), []);
  });

  it('keeps trying after a failed create', async () => {
    const refill = new WarmPool({ runtime, idRanges: store, logger: silentLogger, newId, limits, sizes: { other: 2 } });
    runtime.failCreates = 2;
    refill.start();
    await refill.filled();
    assert.deepEqual(refill.stats(), [{ image: 'other', ready: 2, target: 2 }]);
    await refill.close();
  });
});

describe('warm pool on the real driver', () => {
  let daemon: TestDaemon;
  before(async () => {
    // 50 live runs at once are over the default quota (20 sandboxes): raise it for this daemon.
    daemon = await startDaemon({
      driver: 'oci',
      config: { pool: { size: 4, memoryShare: 0.5 }, quota: { sandboxes: 64, cpus: 64, memoryMb: 65_536, pids: 65_536 } },
    });
    await daemon.daemon.pool!.filled();
  });
  after(async () => {
    await daemon?.close();
  });

  it('50 parallel runs on 2 cores all succeed with their own output', async () => {
    const runs = await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const handle = daemon.sdk.run({ script: `echo run-$N; hostname; echo err-$N >&2`, env: { N: String(i) }, name: `par-${i}` });
        const output = await collectOutput(handle);
        return { i, ...output, sandbox: await handle.sandbox() };
      }),
    );
    for (const run of runs) {
      assert.equal(run.exitCode, 0, `run ${run.i}: ${run.stderr}`);
      assert.equal(run.stdout, `run-${run.i}\npar-${run.i}\n`);
      assert.equal(run.stderr, `err-${run.i}\n`);
    }
    assert.equal(new Set(runs.map((run) => run.sandbox!.id)).size, 50);
    const log = await readFile(daemon.logFile, 'utf8');
    const fromPool = log.split('\n').filter((line) => line.includes('"msg":"sandbox running"') && line.includes('"fromPool":true')).length;
    const poolLines = log.split('\n').filter((line) => /warm pool|pool member/.test(line));
    assert.ok(fromPool >= 4, `${fromPool} runs came from the pool:\n${poolLines.join('\n')}`);
  });

  it('refills, and a claimed member has its own hostname, /etc/hosts and limits', async () => {
    await daemon.daemon.pool!.filled();
    assert.equal(daemon.daemon.pool!.stats()[0]!.ready, 4);
    const handle = daemon.sdk.run({
      script: 'hostname; grep -c claimed-one /etc/hosts; cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes',
      name: 'claimed-one',
      memoryMb: 300,
    });
    const output = await collectOutput(handle);
    assert.equal(output.stdout, `claimed-one\n1\n${300 * 1024 * 1024}\n`);
  });
});
