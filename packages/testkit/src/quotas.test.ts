// Per-user quotas in core, over the FakeRuntime, an in-memory SQLite store and a manual clock:
// each limit, the race of parallel creates (with and without a warm pool), timeouts a timer
// cannot hold, log trimming oldest first, and who may change what.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import {
  maxTimeoutSec,
  Quotas,
  SandboxService,
  WarmPool,
  type ExecSession,
  type QuotaLimits,
  type RoostError,
  type Store,
  type UserRecord,
} from '@roost/core';
import { newId } from '@roost/roostd';
import { openSqliteStore } from '@roost/store-sqlite';
import { FakeRuntime } from './fake-runtime.js';
import { drainOutput, silentLogger } from './test-deps.js';
import { ManualClock } from './manual-clock.js';
import { roomyQuota } from './quota-fixtures.js';

const sandboxLimits = { cpus: 1, memoryMb: 512, pids: 256, openFiles: 1024 };

async function drain(session: ExecSession) {
  return { ...(await drainOutput(session.output)), exit: await session.done };
}

/** Asserts a QUOTA_EXCEEDED whose message matches. */
function quotaExceeded(message: RegExp) {
  return (error: RoostError) => {
    assert.equal(error.code, 'QUOTA_EXCEEDED');
    assert.match(error.message, message);
    return true;
  };
}

describe('quotas', () => {
  let store: Store;
  let runtime: FakeRuntime;
  let clock: ManualClock;
  let quotas: Quotas;
  let service: SandboxService;
  let pool: WarmPool | undefined;
  const alice: UserRecord = { id: 'usr_alice', name: 'alice', isAdmin: false, createdAt: new Date() };
  const bob: UserRecord = { id: 'usr_bob', name: 'bob', isAdmin: false, createdAt: new Date() };
  const admin: UserRecord = { id: 'usr_admin', name: 'admin', isAdmin: true, createdAt: new Date() };

  /** A service whose every user has `limits` (over roomy defaults) unless an admin changes them. */
  function build(limits: Partial<QuotaLimits>, opts: { poolSize?: number } = {}) {
    quotas = new Quotas({ store, defaults: { ...roomyQuota, ...limits }, now: () => clock.now() });
    pool = opts.poolSize ? new WarmPool({ runtime, idRanges: store, logger: silentLogger, newId, limits: sandboxLimits, sizes: { debian: opts.poolSize } }) : undefined;
    service = new SandboxService({
      store,
      runtime,
      clock,
      logger: silentLogger,
      newId,
      pool,
      quotas,
      defaults: { image: 'debian', limits: sandboxLimits, network: 'none' },
    });
  }

  beforeEach(async () => {
    store = await openSqliteStore({ path: ':memory:' });
    for (const user of [alice, bob, admin]) await store.createUser(user);
    runtime = new FakeRuntime();
    clock = new ManualClock();
  });
  afterEach(async () => {
    await pool?.close();
    await runtime.close();
    await store.close();
  });

  it('live sandboxes: the one past the limit is refused, naming limit and use; ended ones do not count', async () => {
    build({ sandboxes: 2 });
    const first = await service.create(alice.id, { name: 'one' });
    await service.create(alice.id, { name: 'two' });
    await assert.rejects(
      service.create(alice.id, { name: 'three' }),
      quotaExceeded(/^over your quota: sandboxes: 2 of 2 live sandboxes in use; this would be one more$/),
    );
    assert.deepEqual((await service.list(alice.id, { all: true })).map((s) => s.name).sort(), ['one', 'two'], 'the refused one left no record');
    assert.equal((await runtime.list()).length, 2, 'and nothing in the runtime');
    // Another user has a quota of their own.
    await service.create(bob.id, { name: 'one' });
    // A stopped sandbox and an ended run no longer count.
    await service.stop(alice.id, first.id);
    const run = await service.run(alice.id, { script: 'true' });
    await drain(run);
    await service.create(alice.id, { name: 'three' });
    assert.equal((await store.usageOf(alice.id)).sandboxes, 2);
  });

  it('cpus, memory and pids are summed over live sandboxes; the message names the limit, the use and the ask', async () => {
    build({ cpus: 2, memoryMb: 4096, pids: 1000 });
    await service.create(alice.id, { cpus: 1.5, memoryMb: 2048, pids: 100 });
    await assert.rejects(
      service.create(alice.id, { cpus: 1 }),
      quotaExceeded(/^over your quota: cpus: 1\.5 of 2 CPUs in use by 1 live sandbox; this sandbox asks 1$/),
    );
    await service.create(alice.id, { cpus: 0.5, memoryMb: 2048, pids: 100 });
    await assert.rejects(
      service.create(alice.id, { cpus: 0.001, memoryMb: 512 }),
      quotaExceeded(/memory: 4096 MB of 4096 MB in use by 2 live sandboxes; this sandbox asks 512 MB/),
    );
    await assert.rejects(
      service.create(alice.id, { cpus: 0.001, memoryMb: 16, pids: 801 }),
      (error: RoostError) => {
        assert.equal(error.code, 'QUOTA_EXCEEDED');
        // Every limit it is over is named, each with its use.
        assert.match(error.message, /cpus: 2 of 2 CPUs in use by 2 live sandboxes; this sandbox asks 0\.001/);
        assert.match(error.message, /memory: 4096 MB of 4096 MB in use by 2 live sandboxes; this sandbox asks 16 MB/);
        assert.match(error.message, /pids: 200 of 1000 processes in use by 2 live sandboxes; this sandbox asks 801/);
        return true;
      },
    );
    assert.deepEqual(await store.usageOf(alice.id), { sandboxes: 2, cpus: 2, memoryMb: 4096, pids: 200, logBytes: 0 });
    // Fractions add up without rounding errors counting against the user.
    build({ cpus: 0.3 });
    await service.create(bob.id, { cpus: 0.1 });
    await service.create(bob.id, { cpus: 0.2 });
  });

  it('20 parallel creates against a limit of 5 make exactly 5', async () => {
    build({ sandboxes: 5 });
    const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => service.create(alice.id, { name: `par-${i}` })));
    const made = results.filter((r) => r.status === 'fulfilled');
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    assert.equal(made.length, 5);
    assert.equal(refused.length, 15);
    for (const r of refused) assert.equal((r.reason as RoostError).code, 'QUOTA_EXCEEDED');
    assert.equal((await service.list(alice.id)).length, 5);
    assert.equal((await runtime.list()).length, 5);
  });

  it('20 parallel creates with a warm pool make exactly 5, and refused claims go back to the pool', async () => {
    build({ sandboxes: 5, memoryMb: 5 * 512 }, { poolSize: 3 });
    pool!.start();
    await pool!.filled();
    const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => service.create(alice.id, { name: `pool-${i}` })));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 5);
    const records = await service.list(alice.id);
    assert.equal(records.length, 5);
    await pool!.filled();
    // Every sandbox the runtime holds is either a record or a pool member: nothing leaked.
    const held = new Set(await runtime.list());
    const members = pool!.held();
    assert.equal(held.size, records.length + members.length);
    for (const id of [...records.map((r) => r.id), ...members]) assert.ok(held.has(id), id);
    assert.deepEqual(pool!.stats(), [{ image: 'debian', ready: 3, target: 3 }]);
  });

  it('a timeout longer than the quota is refused before any sandbox is made; up to it runs', async () => {
    build({ timeoutSec: 60 });
    await assert.rejects(
      service.run(alice.id, { script: 'sleep 1', timeoutSec: 61 }),
      quotaExceeded(/^over your quota: timeout: this run asks 61 s; the longest you may ask is 60 s$/),
    );
    assert.deepEqual(await service.list(alice.id, { all: true }), []);
    const box = await service.create(alice.id, { name: 'box' });
    await assert.rejects(service.exec(alice.id, box.id, { command: ['true'], timeoutSec: 3600 }), quotaExceeded(/this exec asks 3600 s; the longest you may ask is 60 s/));
    const session = await service.exec(alice.id, box.id, { command: ['sleep', '30'], timeoutSec: 60 });
    const output = drain(session);
    clock.advance(60_000);
    assert.equal((await output).exit.exitCode, 124);
  });

  it('a timeout longer than a timer can hold is refused, never fired at once', async () => {
    build({ timeoutSec: maxTimeoutSec });
    const box = await service.create(alice.id, { name: 'box' });
    for (const timeoutSec of [maxTimeoutSec + 1, 2 ** 31, 1e12, Number.POSITIVE_INFINITY, Number.NaN]) {
      await assert.rejects(service.exec(alice.id, box.id, { command: ['true'], timeoutSec }), (error: RoostError) => {
        assert.equal(error.code, 'LIMIT_TOO_HIGH');
        assert.match(error.message, /longer than a timer can wait \(at most 2147483 s/);
        return true;
      });
      await assert.rejects(service.run(alice.id, { script: 'true', timeoutSec }), { code: 'LIMIT_TOO_HIGH' });
    }
    assert.deepEqual(clock.requestedDelaysMs, [], 'no timer was set for any of them');
    assert.equal((await service.list(alice.id, { all: true })).length, 1, 'no run was started');
    // The longest that fits is a real timer that has not fired.
    const session = await service.exec(alice.id, box.id, { command: ['sleep', '0.2'], timeoutSec: maxTimeoutSec });
    const result = await drain(session);
    assert.deepEqual(clock.requestedDelaysMs, [maxTimeoutSec * 1000]);
    assert.equal(result.exit.exitCode, 0);
    assert.equal(result.exit.reason, undefined);
  });

  it("stored run logs past the quota are trimmed oldest first, the oldest run's first; logs say so", async () => {
    build({ logBytes: 1000 });
    const runOf = async (script: string) => {
      const session = await service.run(alice.id, { script });
      await drain(session);
      return session.sandbox;
    };
    const logOf = async (id: string) => {
      let text = '';
      for await (const chunk of service.logs.read(await service.get(alice.id, id), { follow: false })) text += Buffer.from(chunk.data).toString();
      return text;
    };
    const first = await runOf(`printf 'A%.0s' $(seq 600)`);
    const second = await runOf(`printf 'B%.0s' $(seq 600)`);
    assert.equal((await store.usageOf(alice.id)).logBytes, 1000);
    const firstLog = await logOf(first.id);
    assert.match(firstLog, /^\[roost: earlier output was trimmed \(200 bytes, oldest first\) to keep your stored logs within your quota; `roost quota` shows it\]\n/);
    assert.equal(firstLog.split('\n')[1], 'A'.repeat(400), 'the first run kept its newest 400 bytes');
    assert.equal(await logOf(second.id), 'B'.repeat(600), 'the newer run is whole and has no note');
    assert.equal((await service.get(alice.id, first.id)).logTrimmedBytes, 200);

    // One run keeps at most the whole quota (its head, then a note); older runs' output goes first.
    const third = await runOf(`for i in $(seq 30); do printf 'line %04d ' $i; printf 'C%.0s' $(seq 90); echo; done`);
    assert.equal((await store.usageOf(alice.id)).logBytes, 1000);
    for (const older of [first, second]) {
      assert.equal((await service.get(alice.id, older.id)).logTrimmedBytes, 600, 'every byte of the older runs went first');
      assert.match(await logOf(older.id), /^\[roost: earlier output was trimmed \(600 bytes, oldest first\)[^\n]*\]\n$/);
    }
    assert.match(await logOf(third.id), /C+\n\[roost: log cut after 1000 bytes \(at most 1000 are kept of one run\); the script's output was not cut\]\n$/);

    // Other users' logs are untouched by alice's quota.
    const bobs = await service.run(bob.id, { script: `printf 'D%.0s' $(seq 600)` });
    await drain(bobs);
    assert.equal((await store.usageOf(bob.id)).logBytes, 600);
    assert.equal((await store.usageOf(alice.id)).logBytes, 1000);
    // Removing a sandbox frees its bytes.
    await service.remove(alice.id, third.id);
    assert.equal((await store.usageOf(alice.id)).logBytes, 0);
  });

  it('only an admin changes quotas, its own included; null returns a limit to the default; defaults apply to the admin', async () => {
    build({ sandboxes: 1, memoryMb: 1024 });
    await service.create(admin.id, { name: 'first' });
    await assert.rejects(service.create(admin.id, { name: 'second' }), quotaExceeded(/sandboxes: 1 of 1/));
    await assert.rejects(quotas.change(alice, 'alice', { sandboxes: 100 }), { code: 'FORBIDDEN' });
    await assert.rejects(quotas.viewOf(alice, 'bob'), { code: 'FORBIDDEN' });
    await assert.rejects(quotas.change(admin, 'nobody', { sandboxes: 2 }), { code: 'ROOST_USER_NOT_FOUND' });
    await assert.rejects(quotas.change(admin, 'alice', { timeoutSec: maxTimeoutSec + 1 }), { code: 'LIMIT_TOO_HIGH' });

    const raised = await quotas.change(admin, 'admin', { sandboxes: 3 });
    assert.equal(raised.limits.sandboxes, 3);
    assert.deepEqual(raised.overrides, { sandboxes: 3 });
    await service.create(admin.id, { name: 'second' });
    // By id works too; a change leaves the other overrides as they are.
    const byId = await quotas.change(admin, alice.id, { memoryMb: 2048, sandboxes: 4 });
    assert.deepEqual(byId.overrides, { sandboxes: 4, memoryMb: 2048 });
    const reset = await quotas.change(admin, 'alice', { sandboxes: null });
    assert.deepEqual(reset.overrides, { memoryMb: 2048 });
    assert.equal(reset.limits.sandboxes, 1);
    assert.deepEqual((await quotas.view(admin)).usage, { sandboxes: 2, cpus: 2, memoryMb: 1024, pids: 512, logBytes: 0 });
    assert.equal((await quotas.change(admin, 'alice', { memoryMb: null })).limits.memoryMb, 1024);
    // Changes of different limits at once all stay (each is one transaction).
    await Promise.all([
      quotas.change(admin, 'bob', { cpus: 4 }),
      quotas.change(admin, 'bob', { pids: 400 }),
      quotas.change(admin, 'bob', { logBytes: 4096 }),
    ]);
    assert.deepEqual((await quotas.viewOf(admin, 'bob')).overrides, { cpus: 4, pids: 400, logBytes: 4096 });
  });
});
