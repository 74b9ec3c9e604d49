// The quota routes over HTTP on a daemon with the fake runtime: who may read and change what,
// and what a bad change gets.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Roost, RoostApiError } from '@roost/sdk';
import { startDaemon, type TestDaemon } from './start-daemon.js';

describe('quota API', () => {
  let daemon: TestDaemon;
  let dave: Roost;
  before(async () => {
    daemon = await startDaemon({ driver: 'fake', config: { quota: { sandboxes: 2 } } });
    dave = new Roost({ apiUrl: daemon.url, token: await daemon.createUserToken('dave') });
  });
  after(async () => {
    await daemon?.close();
  });

  it('every user reads its own quota and use', async () => {
    await dave.sandboxes.create({ name: 'one', cpus: 0.5, memoryMb: 128, pids: 64 });
    const mine = await dave.quotas.mine();
    assert.equal(mine.user.name, 'dave');
    assert.equal(mine.limits.sandboxes, 2);
    assert.deepEqual(mine.overrides, {});
    assert.deepEqual(mine.usage, { sandboxes: 1, cpus: 0.5, memoryMb: 128, pids: 64, logBytes: 0 });
    assert.equal((await daemon.sdk.quotas.get('dave')).usage.sandboxes, 1, 'the admin sees the same');
  });

  it("a non-admin cannot read or change another user's quota, nor learn whether a user exists", async () => {
    for (const attempt of [dave.quotas.get('admin'), dave.quotas.get('nobody'), dave.quotas.set('dave', { sandboxes: 100 })]) {
      await assert.rejects(attempt, (error: RoostApiError) => {
        assert.equal(error.status, 403);
        assert.equal(error.code, 'FORBIDDEN');
        return true;
      });
    }
    assert.equal((await dave.quotas.mine()).limits.sandboxes, 2);
  });

  it('the admin changes limits by name or id; null returns one to the default; bad changes are refused whole', async () => {
    await assert.rejects(daemon.sdk.quotas.get('nobody'), (error: RoostApiError) => error.status === 404 && error.code === 'ROOST_USER_NOT_FOUND');
    const { user } = await daemon.sdk.quotas.mine();
    assert.equal(user.name, 'admin');
    const set = await daemon.sdk.quotas.set(user.id, { sandboxes: 5, logBytes: 1024 });
    assert.deepEqual(set.overrides, { sandboxes: 5, logBytes: 1024 });
    for (const bad of [{ sandboxes: -1 }, { cpus: 'many' }, { timeoutSec: 2_147_484 }, { timeoutSec: 0 }, { memoryMb: 1.5 }, { gpus: 1 }]) {
      await assert.rejects(daemon.sdk.quotas.set('admin', bad as never), (error: RoostApiError) => {
        assert.equal(error.status, 400, JSON.stringify(bad));
        assert.equal(error.code, 'VALIDATION_FAILED');
        return true;
      });
    }
    assert.deepEqual((await daemon.sdk.quotas.mine()).overrides, { sandboxes: 5, logBytes: 1024 }, 'nothing of a refused change was kept');
    const reset = await daemon.sdk.quotas.set('admin', { sandboxes: null, logBytes: null });
    assert.deepEqual(reset.overrides, {});
    assert.equal(reset.limits.sandboxes, 2);
  });

  it('exec and run refuse a timeout longer than a timer can hold with VALIDATION_FAILED saying so', async () => {
    await assert.rejects(dave.run({ script: 'true', timeoutSec: 2 ** 31 }).wait(), (error: RoostApiError) => {
      assert.equal(error.code, 'VALIDATION_FAILED');
      assert.match(error.message, /timeoutSec: at most 2147483 s \(about 24\.8 days\): the longest a timer can wait/);
      return true;
    });
    await assert.rejects(dave.exec('one', ['true'], { timeoutSec: 1e10 }).wait(), { code: 'VALIDATION_FAILED' });
    assert.equal((await dave.sandboxes.list({ all: true })).length, 1, 'the refused run made no sandbox');
  });
});
