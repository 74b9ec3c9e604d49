// Host id ranges (SandboxSpec.idRange): allocated in the store, one per sandbox and per pool
// member, freed when the runtime has removed the sandbox, kept across a restart. Core logic over
// the FakeRuntime and SQLite; the real driver's side is adapters/runtime-oci/src/id-ranges.e2e.test.ts.
// The store's own rules (lowest free range, same holder same range, reuse, 500 at once) are in
// the Store conformance suite (store-conformance.ts).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { Quotas, SandboxService, WarmPool, type SandboxSpec, type Store } from '@roost/core';
import { newId } from '@roost/roostd';
import { openSqliteStore } from '@roost/store-sqlite';
import { FakeRuntime } from './fake-runtime.js';
import { silentLogger, wallClock } from './test-deps.js';
import { roomyQuota } from './quota-fixtures.js';

const limits = { cpus: 1, memoryMb: 256, pids: 64, openFiles: 1024 };

/** Remembers the range each sandbox was made with; can be told to fail creates. */
class RangeRecordingRuntime extends FakeRuntime {
  readonly ranges = new Map<string, number>();
  failCreates = 0;
  override async create(spec: SandboxSpec): Promise<void> {
    if (this.failCreates > 0) {
      this.failCreates--;
      throw new Error('no room');
    }
    this.ranges.set(spec.id, spec.idRange);
    await super.create(spec);
  }
}

describe('host id ranges', () => {
  let dir: string;
  let store: Store;
  let runtime: RangeRecordingRuntime;
  let service: SandboxService;
  const owner = 'usr_1';
  const held = async () => Object.fromEntries((await store.listIdRanges()).map((a) => [a.holderId, a.idRange]));

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'roost-id-ranges-'));
    store = await openSqliteStore({ path: join(dir, 'roost.db') });
    await store.createUser({ id: owner, name: 'alice', isAdmin: true, createdAt: new Date() });
    runtime = new RangeRecordingRuntime();
    service = new SandboxService({ store, runtime, clock: wallClock, logger: silentLogger, newId, quotas: new Quotas({ store, defaults: roomyQuota, now: () => wallClock.now() }), defaults: { image: 'debian', limits, network: 'none' } });
  });
  afterEach(async () => {
    for (const id of await runtime.list()) await runtime.destroy(id);
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('each sandbox is made with its own range; rm, stop and an ended run free theirs for the next sandbox', async () => {
    const a = await service.create(owner, { name: 'a' });
    const b = await service.create(owner, { name: 'b' });
    const c = await service.create(owner, { name: 'c' });
    assert.deepEqual([a, b, c].map((s) => runtime.ranges.get(s.id)), [0, 1, 2]);
    assert.deepEqual(await held(), { [a.id]: 0, [b.id]: 1, [c.id]: 2 });

    await service.remove(owner, a.id);
    await service.stop(owner, c.id);
    assert.deepEqual(await held(), { [b.id]: 1 });
    const d = await service.create(owner, { name: 'd' });
    assert.equal(runtime.ranges.get(d.id), 0, 'the range of the removed sandbox is reused');

    const run = await service.run(owner, { script: 'true' });
    assert.equal(runtime.ranges.get(run.sandbox.id), 2);
    for await (const _ of run.output);
    await run.done;
    await service.settle();
    assert.deepEqual(await held(), { [b.id]: 1, [d.id]: 0 }, 'a one-shot run frees its range once torn down');
  });

  it('a create the runtime refused frees its range', async () => {
    runtime.failCreates = 1;
    await assert.rejects(service.create(owner, { name: 'broken' }), { code: 'RUNTIME_FAILED' });
    assert.deepEqual(await held(), {});
    const next = await service.create(owner, { name: 'next' });
    assert.equal(runtime.ranges.get(next.id), 0);
  });

  it('warm-pool members hold ranges from their creation; a claim keeps the member\'s; close frees the rest', async () => {
    const pool = new WarmPool({ runtime, idRanges: store, logger: silentLogger, newId, limits, sizes: { debian: 2 } });
    const pooled = new SandboxService({ store, runtime, clock: wallClock, logger: silentLogger, newId, pool, quotas: new Quotas({ store, defaults: roomyQuota, now: () => wallClock.now() }), defaults: { image: 'debian', limits, network: 'none' } });
    pool.start();
    await pool.filled();
    const members = pool.members();
    assert.deepEqual(await held(), { [members[0]!]: 0, [members[1]!]: 1 });

    const claimed = await pooled.create(owner, { name: 'from-pool' });
    assert.equal(claimed.id, members[0]);
    await pool.filled();
    const ranges = await held();
    assert.equal(ranges[claimed.id], 0, 'the claimed member keeps its range');
    assert.equal(new Set(Object.values(ranges)).size, 3, 'the refill got a range of its own');

    await pool.close();
    assert.deepEqual(await held(), { [claimed.id]: 0 });
  });

  it('after a restart, adopted sandboxes keep their ranges (kept in the store file) and every other range is freed', async () => {
    const keeper = await service.create(owner, { name: 'keeper' });
    const cut = await service.create(owner, { name: 'cut', persistent: false });
    // A pool member of the previous process and a create cut short by the crash.
    await store.allocateIdRange('sb_oldpoolmember');
    await runtime.create({ id: 'sb_oldpoolmember', hostname: 'roost-pool', image: 'debian', limits, network: 'none', env: {}, idRange: 2 });
    await store.allocateIdRange('sb_neverstarted');
    await store.close();

    store = await openSqliteStore({ path: join(dir, 'roost.db') });
    assert.deepEqual(await held(), { [keeper.id]: 0, [cut.id]: 1, sb_oldpoolmember: 2, sb_neverstarted: 3 });
    service = new SandboxService({ store, runtime, clock: wallClock, logger: silentLogger, newId, quotas: new Quotas({ store, defaults: roomyQuota, now: () => wallClock.now() }), defaults: { image: 'debian', limits, network: 'none' } });
    await service.reconcile();
    assert.deepEqual(await held(), { [keeper.id]: 0 });
    const next = await service.create(owner, { name: 'next' });
    assert.equal(runtime.ranges.get(next.id), 1);
  });
});
