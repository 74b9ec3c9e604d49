// The Store port's conformance suite: every store (SQLite today, PostgreSQL later) must pass it.
// Each test makes its own store and closes it, even when it fails. Rules about transactions are
// tried with concurrent calls (Promise.all), the way requests reach a daemon. One `describe` per
// concern: a new part of the port (e.g. workspace records) adds its own.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import {
  nameHoldingStatuses,
  type LogChunk,
  type SandboxRecord,
  type SandboxStatus,
  type Store,
  type UserUsage,
} from '@roost/core';

export interface StoreUnderTest {
  store: Store;
  /** Opens the same database again after `store.close()` (a restarted daemon); absent for a store that keeps nothing (in memory). */
  reopen?(): Promise<Store>;
  /** Removes what the store kept (files, a database); called after the suite closed its stores. */
  cleanup(): Promise<void>;
}

export interface StoreConformanceOpts {
  name: string;
  /** A new, empty store of its own. */
  newStore(): Promise<StoreUnderTest>;
}

const T0 = Date.parse('2026-01-01T00:00:00.000Z');
/** A distinct, ordered point in time: at(1) is after at(0). */
const at = (seconds: number) => new Date(T0 + seconds * 1000);
const limits = { cpus: 1, memoryMb: 256, pids: 64, openFiles: 1024 };
const allStatuses: SandboxStatus[] = ['pending', 'running', 'sleeping', 'stopped', 'completed', 'error'];
const liveStatuses: SandboxStatus[] = ['pending', 'running', 'sleeping'];
const endedStatuses: SandboxStatus[] = ['completed', 'error'];

function sandbox(id: string, ownerId: string, fields: Partial<SandboxRecord> = {}): SandboxRecord {
  return {
    id,
    ownerId,
    name: id,
    image: 'debian',
    status: 'running',
    persistent: true,
    limits,
    network: 'none',
    sshAgentForwarding: false,
    defaultUser: 'root',
    env: {},
    egress: { allow: [], deny: [] },
    exitCode: null,
    statusReason: null,
    logTrimmedBytes: 0,
    workspaceId: null,
    createdAt: at(1),
    updatedAt: at(1),
    ...fields,
  };
}

/** `length` bytes counting up from `from` (mod 256): a tail is recognisable by its first byte. */
function bytes(length: number, from = 0): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (from + i) % 256);
}

/** Chunks as plain values (a store may hand back a Buffer or a Uint8Array). */
const plain = (chunks: LogChunk[]) => chunks.map((c) => ({ seq: c.seq, stream: c.stream, data: [...c.data] }));

const zeroUsage: UserUsage = { sandboxes: 0, cpus: 0, memoryMb: 0, pids: 0, logBytes: 0 };

/** How many of the settled calls were fulfilled, and the codes of the rejected ones. */
function outcomes(results: PromiseSettledResult<unknown>[]): { fulfilled: number; codes: string[] } {
  const codes = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => (r.reason as { code?: string }).code ?? String(r.reason));
  return { fulfilled: results.length - codes.length, codes };
}

export function storeConformance(opts: StoreConformanceOpts): void {
  /** A test on a fresh store with users alice and bob; the store is closed and removed after it. */
  const test = (name: string, fn: (store: Store, h: StoreUnderTest & { closeAndReopen(): Promise<Store> }, t: TestContext) => Promise<void>) =>
    it(name, async (t) => {
      const h = await opts.newStore();
      let current = h.store;
      let open = true;
      try {
        await current.createUser({ id: 'usr_alice', name: 'alice', isAdmin: true, createdAt: at(0) });
        await current.createUser({ id: 'usr_bob', name: 'bob', isAdmin: false, createdAt: at(0) });
        await fn(current, {
          ...h,
          closeAndReopen: async () => {
            assert.ok(h.reopen, 'closeAndReopen needs a store that can reopen');
            open = false;
            await current.close();
            current = await h.reopen();
            open = true;
            return current;
          },
        }, t);
      } finally {
        if (open) await current.close();
        await h.cleanup();
      }
    });

  describe(`Store conformance: ${opts.name}`, () => {
    describe('users and tokens', () => {
      test('users are found by id and by name; unknown ones are undefined', async (store) => {
        assert.deepEqual(await store.getUser('usr_alice'), { id: 'usr_alice', name: 'alice', isAdmin: true, createdAt: at(0) });
        assert.deepEqual(await store.getUserByName('bob'), { id: 'usr_bob', name: 'bob', isAdmin: false, createdAt: at(0) });
        assert.equal(await store.getUser('usr_nobody'), undefined);
        assert.equal(await store.getUserByName('nobody'), undefined);
        await assert.rejects(store.createUser({ id: 'usr_other', name: 'alice', isAdmin: false, createdAt: at(1) }), 'a user name is unique');
        assert.equal((await store.getUserByName('alice'))?.id, 'usr_alice');
      });

      test('a token is found by its hash only; touch records its last use', async (store) => {
        const token = { id: 'tok_1', userId: 'usr_alice', tokenHash: 'a'.repeat(64), description: 'laptop', createdAt: at(1), lastUsedAt: null };
        await store.createToken(token);
        await store.createToken({ ...token, id: 'tok_2', userId: 'usr_bob', tokenHash: 'b'.repeat(64), description: 'ci' });
        assert.deepEqual(await store.findTokenByHash('a'.repeat(64)), token);
        assert.equal((await store.findTokenByHash('b'.repeat(64)))?.userId, 'usr_bob');
        assert.equal(await store.findTokenByHash('c'.repeat(64)), undefined);
        assert.equal(await store.findTokenByHash('tok_1'), undefined, 'not by id');

        await store.touchToken('tok_1', at(5));
        assert.deepEqual((await store.findTokenByHash('a'.repeat(64)))?.lastUsedAt, at(5));
        await store.touchToken('tok_1', at(9));
        assert.deepEqual((await store.findTokenByHash('a'.repeat(64)))?.lastUsedAt, at(9));
        assert.equal((await store.findTokenByHash('b'.repeat(64)))?.lastUsedAt, null, 'the other token is untouched');
      });
    });

    describe('SSH keys', () => {
      const key = (id: string, userId: string, fingerprint: string, createdAt = at(1)) => ({
        id,
        userId,
        name: id,
        type: 'ssh-ed25519',
        publicKey: `AAAAC3NzaC1lZDI1NTE5AAAA${id}`,
        fingerprint,
        createdAt,
        lastUsedAt: null,
      });

      test('a fingerprint belongs to one user: SSH_KEY_TAKEN for anyone else and for its owner', async (store) => {
        await store.insertSshKey(key('key_a', 'usr_alice', 'SHA256:one'));
        await assert.rejects(store.insertSshKey(key('key_b', 'usr_bob', 'SHA256:one')), { code: 'SSH_KEY_TAKEN' });
        await assert.rejects(store.insertSshKey(key('key_c', 'usr_alice', 'SHA256:one')), { code: 'SSH_KEY_TAKEN' });
        assert.deepEqual(await store.listSshKeys('usr_bob'), []);
        assert.deepEqual(await store.getSshKeyByFingerprint('SHA256:one'), key('key_a', 'usr_alice', 'SHA256:one'));
        assert.equal(await store.getSshKeyByFingerprint('SHA256:none'), undefined);
      });

      test('of several users adding one key at once, exactly one gets it', async (store) => {
        for (let i = 0; i < 6; i++) await store.createUser({ id: `usr_${i}`, name: `user${i}`, isAdmin: false, createdAt: at(0) });
        const results = await Promise.allSettled(Array.from({ length: 6 }, (_, i) => store.insertSshKey(key(`key_${i}`, `usr_${i}`, 'SHA256:contested'))));
        const { fulfilled, codes } = outcomes(results);
        assert.equal(fulfilled, 1);
        assert.deepEqual(codes, Array(5).fill('SSH_KEY_TAKEN'));
        const holder = await store.getSshKeyByFingerprint('SHA256:contested');
        assert.ok(holder);
        assert.deepEqual((await store.listSshKeys(holder.userId)).map((k) => k.id), [holder.id]);
      });

      test('keys are listed per user; delete frees the fingerprint; touch records the last use', async (store) => {
        await store.insertSshKey(key('key_a1', 'usr_alice', 'SHA256:a1', at(1)));
        await store.insertSshKey(key('key_a2', 'usr_alice', 'SHA256:a2', at(2)));
        await store.insertSshKey(key('key_b1', 'usr_bob', 'SHA256:b1', at(3)));
        const ids = async (userId: string) => (await store.listSshKeys(userId)).map((k) => k.id).sort();
        assert.deepEqual(await ids('usr_alice'), ['key_a1', 'key_a2']);
        assert.deepEqual(await store.listSshKeys('usr_bob'), [key('key_b1', 'usr_bob', 'SHA256:b1', at(3))]);

        await store.touchSshKey('key_a2', at(7));
        assert.deepEqual((await store.getSshKeyByFingerprint('SHA256:a2'))?.lastUsedAt, at(7));
        assert.equal((await store.getSshKeyByFingerprint('SHA256:a1'))?.lastUsedAt, null);

        await store.deleteSshKey('key_a1');
        await store.deleteSshKey('key_a1');
        assert.deepEqual(await ids('usr_alice'), ['key_a2']);
        assert.equal(await store.getSshKeyByFingerprint('SHA256:a1'), undefined);
        await store.insertSshKey(key('key_b2', 'usr_bob', 'SHA256:a1', at(8)));
        assert.deepEqual(await ids('usr_bob'), ['key_b1', 'key_b2']);
      });
    });

    describe('sandbox records', () => {
      test('a record reads back as it was written; listSandboxes filters by owner', async (store) => {
        const full = sandbox('sb_full', 'usr_alice', {
          name: 'full',
          image: 'python',
          status: 'sleeping',
          persistent: false,
          limits: { cpus: 2.5, memoryMb: 1024, pids: 300, openFiles: 4096 },
          network: 'nat',
          sshAgentForwarding: true,
          defaultUser: 'dev',
          env: { A: '1', 'WITH SPACE': 'x=y\nz' },
          egress: { allow: ['198.51.100.0/24'], deny: ['192.0.2.0/25', '203.0.113.7/32'] },
          exitCode: 3,
          statusReason: 'slept after 60 s',
          logTrimmedBytes: 0,
          createdAt: at(2),
          updatedAt: at(3),
        });
        await store.insertSandbox(full);
        await store.insertSandbox(sandbox('sb_a2', 'usr_alice', { createdAt: at(4) }));
        await store.insertSandbox(sandbox('sb_b1', 'usr_bob'));
        assert.deepEqual(await store.getSandbox('sb_full'), full);
        assert.equal(await store.getSandbox('sb_none'), undefined);
        const ids = (records: SandboxRecord[]) => records.map((s) => s.id).sort();
        assert.deepEqual(ids(await store.listSandboxes({ ownerId: 'usr_alice' })), ['sb_a2', 'sb_full']);
        assert.deepEqual(ids(await store.listSandboxes({ ownerId: 'usr_bob' })), ['sb_b1']);
        assert.deepEqual(ids(await store.listSandboxes({})), ['sb_a2', 'sb_b1', 'sb_full']);
        assert.deepEqual((await store.listSandboxes({ ownerId: 'usr_alice' })).find((s) => s.id === 'sb_full'), full);
      });

      for (const holding of allStatuses) {
        const holds = nameHoldingStatuses.includes(holding);
        test(`a ${holding} sandbox ${holds ? 'holds its name (SANDBOX_NAME_TAKEN)' : 'leaves its name free'}; another owner's name is their own`, async (store) => {
          await store.insertSandbox(sandbox('sb_1', 'usr_alice', { name: 'dev', status: holding }));
          const second = sandbox('sb_2', 'usr_alice', { name: 'dev', status: 'pending', createdAt: at(2) });
          if (holds) {
            await assert.rejects(store.insertSandbox(second), { code: 'SANDBOX_NAME_TAKEN' });
            assert.equal(await store.getSandbox('sb_2'), undefined);
          } else {
            await store.insertSandbox(second);
            assert.equal((await store.getSandbox('sb_2'))?.name, 'dev');
          }
          await store.insertSandbox(sandbox('sb_bob', 'usr_bob', { name: 'dev', status: 'pending' }));
          // An ended run never takes a name, so it may share one that is held.
          await store.insertSandbox(sandbox('sb_run', 'usr_alice', { name: 'dev', status: 'completed', createdAt: at(3) }));
        });
      }

      test('of several sandboxes made with one name at once, exactly one gets it', async (store) => {
        const results = await Promise.allSettled(
          Array.from({ length: 8 }, (_, i) => store.insertSandbox(sandbox(`sb_${i}`, 'usr_alice', { name: 'web', status: 'pending', createdAt: at(i) }))),
        );
        const { fulfilled, codes } = outcomes(results);
        assert.equal(fulfilled, 1);
        assert.deepEqual(codes, Array(7).fill('SANDBOX_NAME_TAKEN'));
        assert.equal((await store.sandboxesNamed('usr_alice', 'web')).length, 1);
      });

      test('sandboxesNamed: the one holding the name first, then the newest; only the owner\'s', async (store) => {
        await store.insertSandbox(sandbox('sb_old_run', 'usr_alice', { name: 'job', status: 'completed', createdAt: at(1) }));
        await store.insertSandbox(sandbox('sb_holder', 'usr_alice', { name: 'job', status: 'stopped', createdAt: at(2) }));
        await store.insertSandbox(sandbox('sb_new_run', 'usr_alice', { name: 'job', status: 'error', createdAt: at(3) }));
        await store.insertSandbox(sandbox('sb_mid_run', 'usr_alice', { name: 'job', status: 'completed', createdAt: at(2.5) }));
        await store.insertSandbox(sandbox('sb_bob', 'usr_bob', { name: 'job', status: 'running', createdAt: at(4) }));
        await store.insertSandbox(sandbox('sb_other', 'usr_alice', { name: 'other', createdAt: at(5) }));
        const named = async () => (await store.sandboxesNamed('usr_alice', 'job')).map((s) => s.id);
        assert.deepEqual(await named(), ['sb_holder', 'sb_new_run', 'sb_mid_run', 'sb_old_run']);
        await store.updateSandbox('sb_holder', { status: 'completed' }, at(6));
        assert.deepEqual(await named(), ['sb_new_run', 'sb_mid_run', 'sb_holder', 'sb_old_run']);
        assert.deepEqual(await store.sandboxesNamed('usr_alice', 'nothing'), []);
        assert.deepEqual((await store.sandboxesNamed('usr_bob', 'job')).map((s) => s.id), ['sb_bob']);
      });
    });

    describe('sandbox changes (updateSandbox, deleteSandbox)', () => {
      test('a patch changes only what it names and sets updatedAt; an unknown id changes nothing', async (store) => {
        const original = sandbox('sb_1', 'usr_alice', { status: 'pending', env: { K: 'v' } });
        await store.insertSandbox(original);
        assert.equal(await store.updateSandbox('sb_1', { status: 'running' }, at(5)), true);
        assert.deepEqual(await store.getSandbox('sb_1'), { ...original, status: 'running', updatedAt: at(5) });

        const patch = {
          status: 'completed' as const,
          limits: { cpus: 3, memoryMb: 2048, pids: 500, openFiles: 8192 },
          sshAgentForwarding: true,
          defaultUser: 'app',
          egress: { allow: [], deny: ['10.0.0.0/8'] },
          exitCode: 124,
          statusReason: 'timed out after 5 s',
        };
        assert.equal(await store.updateSandbox('sb_1', patch, at(6)), true);
        assert.deepEqual(await store.getSandbox('sb_1'), { ...original, ...patch, updatedAt: at(6) });
        assert.equal(await store.updateSandbox('sb_1', { exitCode: null, statusReason: null }, at(7)), true);
        assert.deepEqual(await store.getSandbox('sb_1'), { ...original, ...patch, exitCode: null, statusReason: null, updatedAt: at(7) });

        assert.equal(await store.updateSandbox('sb_none', { status: 'running' }, at(8)), false);
        assert.equal(await store.updateSandbox('sb_none', { status: 'running' }, at(8), { fromStatuses: ['pending'] }), false);
        assert.equal(await store.getSandbox('sb_none'), undefined);
      });

      test('with fromStatuses, only from those; of several changes from one status at once, one wins', async (store) => {
        const original = sandbox('sb_1', 'usr_alice', { status: 'stopped' });
        await store.insertSandbox(original);
        assert.equal(await store.updateSandbox('sb_1', { status: 'running' }, at(5), { fromStatuses: ['running', 'sleeping'] }), false);
        assert.deepEqual(await store.getSandbox('sb_1'), original, 'refused: unchanged, updatedAt too');

        const results = await Promise.all(Array.from({ length: 6 }, (_, i) => store.updateSandbox('sb_1', { status: 'pending', statusReason: `start ${i}` }, at(6 + i), { fromStatuses: ['stopped'] })));
        assert.equal(results.filter(Boolean).length, 1);
        const winner = results.indexOf(true);
        const now = await store.getSandbox('sb_1');
        assert.equal(now?.status, 'pending');
        assert.equal(now?.statusReason, `start ${winner}`);
      });

      test("admit sees the owner's live use; what it throws refuses the change", async (store) => {
        await store.insertSandbox(sandbox('sb_live', 'usr_alice', { status: 'running', limits: { ...limits, cpus: 2, memoryMb: 512, pids: 100 } }));
        await store.insertSandbox(sandbox('sb_sleep', 'usr_alice', { status: 'sleeping' }));
        await store.insertSandbox(sandbox('sb_stopped', 'usr_alice', { status: 'stopped' }));
        await store.insertSandbox(sandbox('sb_bob', 'usr_bob', { status: 'running' }));
        const seen: UserUsage[] = [];
        const refusal = new Error('over the quota');
        await assert.rejects(
          store.updateSandbox('sb_stopped', { status: 'pending' }, at(5), {
            fromStatuses: ['stopped'],
            admit: (usage) => {
              seen.push(usage);
              throw refusal;
            },
          }),
          (error) => error === refusal,
        );
        assert.deepEqual(seen, [{ sandboxes: 2, cpus: 3, memoryMb: 768, pids: 164, logBytes: 0 }]);
        assert.equal((await store.getSandbox('sb_stopped'))?.status, 'stopped');

        assert.equal(await store.updateSandbox('sb_stopped', { status: 'pending' }, at(6), { fromStatuses: ['stopped'], admit: () => {} }), true);
        assert.equal((await store.getSandbox('sb_stopped'))?.status, 'pending');
        // A guard that does not hold: admit is not asked.
        let asked = false;
        assert.equal(await store.updateSandbox('sb_stopped', { status: 'running' }, at(7), { fromStatuses: ['stopped'], admit: () => void (asked = true) }), false);
        assert.equal(asked, false);
      });

      test('of several starts at once where the quota has room for one more, exactly one passes', async (store) => {
        await store.insertSandbox(sandbox('sb_live', 'usr_alice', { status: 'running' }));
        for (let i = 0; i < 5; i++) await store.insertSandbox(sandbox(`sb_${i}`, 'usr_alice', { status: 'stopped', createdAt: at(i + 2) }));
        const admit = (usage: UserUsage) => {
          if (usage.sandboxes + 1 > 2) throw Object.assign(new Error('quota'), { code: 'QUOTA_EXCEEDED' });
        };
        const results = await Promise.allSettled(Array.from({ length: 5 }, (_, i) => store.updateSandbox(`sb_${i}`, { status: 'pending' }, at(10), { fromStatuses: ['stopped'], admit })));
        const { fulfilled, codes } = outcomes(results);
        assert.equal(fulfilled, 1);
        assert.deepEqual(codes, Array(4).fill('QUOTA_EXCEEDED'));
        assert.equal((await store.usageOf('usr_alice')).sandboxes, 2);
        const statuses = (await store.listSandboxes({ ownerId: 'usr_alice' })).map((s) => s.status).sort();
        assert.deepEqual(statuses, ['pending', 'running', 'stopped', 'stopped', 'stopped', 'stopped']);
      });

      test('a patch that makes a record hold a name another holds fails with SANDBOX_NAME_TAKEN', async (store) => {
        await store.insertSandbox(sandbox('sb_run', 'usr_alice', { name: 'dev', status: 'completed', createdAt: at(1) }));
        await store.insertSandbox(sandbox('sb_holder', 'usr_alice', { name: 'dev', status: 'running', createdAt: at(2) }));
        await assert.rejects(store.updateSandbox('sb_run', { status: 'stopped' }, at(5)), { code: 'SANDBOX_NAME_TAKEN' });
        await assert.rejects(store.updateSandbox('sb_run', { status: 'pending' }, at(5), { fromStatuses: ['completed'], admit: () => {} }), { code: 'SANDBOX_NAME_TAKEN' });
        assert.equal((await store.getSandbox('sb_run'))?.status, 'completed');
        // Changes between holding statuses, and of other fields, are fine.
        assert.equal(await store.updateSandbox('sb_holder', { status: 'stopped' }, at(6)), true);
        assert.equal(await store.updateSandbox('sb_run', { statusReason: 'done' }, at(6)), true);
        // Once the holder lets go, the name can be taken.
        assert.equal(await store.updateSandbox('sb_holder', { status: 'error' }, at(7)), true);
        assert.equal(await store.updateSandbox('sb_run', { status: 'stopped' }, at(8)), true);
        assert.deepEqual((await store.sandboxesNamed('usr_alice', 'dev')).map((s) => s.id), ['sb_run', 'sb_holder']);
      });

      test('delete removes the record and frees its name; with fromStatuses only from those, and once', async (store) => {
        await store.insertSandbox(sandbox('sb_1', 'usr_alice', { name: 'dev', status: 'stopped' }));
        assert.equal(await store.deleteSandbox('sb_1', { fromStatuses: liveStatuses }), false);
        assert.equal((await store.getSandbox('sb_1'))?.status, 'stopped');
        const results = await Promise.all(Array.from({ length: 5 }, () => store.deleteSandbox('sb_1', { fromStatuses: ['stopped'] })));
        assert.equal(results.filter(Boolean).length, 1);
        assert.equal(await store.getSandbox('sb_1'), undefined);
        assert.equal(await store.deleteSandbox('sb_1'), false);
        await store.insertSandbox(sandbox('sb_2', 'usr_alice', { name: 'dev', status: 'pending' }));

        assert.equal(await store.deleteSandbox('sb_2'), true);
        assert.deepEqual(await store.listSandboxes({}), []);
        assert.equal(await store.deleteSandbox('sb_none'), false);
      });

      test('listEndedRuns: the owner\'s completed and errored runs, newest first, with their logged bytes', async (store) => {
        await store.insertSandbox(sandbox('sb_old', 'usr_alice', { name: 'job', status: 'completed', createdAt: at(1) }));
        await store.insertSandbox(sandbox('sb_new', 'usr_alice', { name: 'job', status: 'error', createdAt: at(3) }));
        await store.insertSandbox(sandbox('sb_mid', 'usr_alice', { name: 'build', status: 'completed', createdAt: at(2) }));
        for (const [i, status] of liveStatuses.concat('stopped').entries()) {
          await store.insertSandbox(sandbox(`sb_${status}`, 'usr_alice', { status, createdAt: at(10 + i) }));
        }
        await store.insertSandbox(sandbox('sb_bob', 'usr_bob', { status: 'completed', createdAt: at(4) }));
        await store.appendLog('sb_old', { seq: 1, stream: 'stdout', data: bytes(10) });
        await store.appendLog('sb_old', { seq: 2, stream: 'stderr', data: bytes(5) });
        await store.appendLog('sb_new', { seq: 1, stream: 'stdout', data: bytes(7) });
        assert.deepEqual(await store.listEndedRuns('usr_alice'), [
          { id: 'sb_new', name: 'job', logBytes: 7, createdAt: at(3) },
          { id: 'sb_mid', name: 'build', logBytes: 0, createdAt: at(2) },
          { id: 'sb_old', name: 'job', logBytes: 15, createdAt: at(1) },
        ]);
        assert.deepEqual((await store.listEndedRuns('usr_bob')).map((r) => r.id), ['sb_bob']);
        // A run that ends joins the list; a deleted one leaves it.
        await store.updateSandbox('sb_running', { status: 'completed' }, at(20));
        await store.deleteSandbox('sb_mid');
        assert.deepEqual((await store.listEndedRuns('usr_alice')).map((r) => r.id), ['sb_running', 'sb_new', 'sb_old']);
      });
    });

    describe('admission in the insert', () => {
      test("admit sees the owner's live use; what it throws refuses the sandbox", async (store) => {
        await store.insertSandbox(sandbox('sb_a', 'usr_alice', { status: 'running', limits: { ...limits, cpus: 2, memoryMb: 512, pids: 100 } }));
        await store.insertSandbox(sandbox('sb_b', 'usr_alice', { status: 'pending' }));
        for (const status of ['stopped', 'completed', 'error'] as const) await store.insertSandbox(sandbox(`sb_${status}`, 'usr_alice', { status }));
        await store.insertSandbox(sandbox('sb_bob', 'usr_bob', { status: 'running' }));
        await store.appendLog('sb_completed', { seq: 1, stream: 'stdout', data: bytes(40) });

        const seen: UserUsage[] = [];
        const refusal = new Error('over the quota');
        const next = sandbox('sb_next', 'usr_alice', { status: 'pending' });
        await assert.rejects(
          store.insertSandbox(next, (usage) => {
            seen.push(usage);
            throw refusal;
          }),
          (error) => error === refusal,
        );
        assert.deepEqual(seen, [{ sandboxes: 2, cpus: 3, memoryMb: 768, pids: 164, logBytes: 40 }]);
        assert.equal(await store.getSandbox('sb_next'), undefined);
        assert.equal((await store.usageOf('usr_alice')).sandboxes, 2);

        await store.insertSandbox(next, () => {});
        assert.equal((await store.getSandbox('sb_next'))?.status, 'pending');
      });

      test('of 10 inserts at once against a quota of 3 live sandboxes, exactly 3 pass', async (store) => {
        await store.insertSandbox(sandbox('sb_bob', 'usr_bob', { status: 'running' }));
        const admit = (usage: UserUsage) => {
          if (usage.sandboxes + 1 > 3) throw Object.assign(new Error('quota'), { code: 'QUOTA_EXCEEDED' });
        };
        const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => store.insertSandbox(sandbox(`sb_${i}`, 'usr_alice', { status: 'pending', createdAt: at(i) }), admit)));
        const { fulfilled, codes } = outcomes(results);
        assert.equal(fulfilled, 3);
        assert.deepEqual(codes, Array(7).fill('QUOTA_EXCEEDED'));
        assert.equal((await store.listSandboxes({ ownerId: 'usr_alice' })).length, 3);
        assert.equal((await store.usageOf('usr_alice')).sandboxes, 3);
      });

      test('of 10 inserts at once against a quota of 4 cpus (1.5 each), exactly 2 pass', async (store) => {
        const admit = (usage: UserUsage) => {
          if (usage.cpus + 1.5 > 4) throw Object.assign(new Error('quota'), { code: 'QUOTA_EXCEEDED' });
        };
        const results = await Promise.allSettled(
          Array.from({ length: 10 }, (_, i) => store.insertSandbox(sandbox(`sb_${i}`, 'usr_alice', { status: 'pending', limits: { ...limits, cpus: 1.5 } }), admit)),
        );
        assert.equal(outcomes(results).fulfilled, 2);
        assert.equal((await store.usageOf('usr_alice')).cpus, 3);
      });
    });

    describe('id ranges', () => {
      const held = async (store: Store) => Object.fromEntries((await store.listIdRanges()).map((a) => [a.holderId, a.idRange]));

      test('the store gives the lowest free range, the same one again to its holder, and reuses freed ones', async (store) => {
        assert.deepEqual(await store.listIdRanges(), []);
        assert.equal(await store.allocateIdRange('a'), 0);
        assert.equal(await store.allocateIdRange('b'), 1);
        assert.equal(await store.allocateIdRange('c'), 2);
        assert.equal(await store.allocateIdRange('b'), 1, 'a holder keeps its range');
        await store.releaseIdRange('b');
        await store.releaseIdRange('b');
        await store.releaseIdRange('never-held');
        assert.equal(await store.allocateIdRange('d'), 1, 'the gap is filled first');
        assert.equal(await store.allocateIdRange('e'), 3);
        await store.releaseIdRange('a');
        assert.equal(await store.allocateIdRange('f'), 0);
        assert.deepEqual(await held(store), { f: 0, d: 1, c: 2, e: 3 });
      });

      test('500 allocations at once get 500 different ranges; one holder asking at once gets one', async (store) => {
        const got = await Promise.all(Array.from({ length: 500 }, (_, i) => store.allocateIdRange(`h${i}`)));
        assert.equal(new Set(got).size, 500);
        assert.deepEqual([...got].sort((a, b) => a - b), Array.from({ length: 500 }, (_, i) => i));
        const same = await Promise.all(Array.from({ length: 20 }, () => store.allocateIdRange('one')));
        assert.deepEqual(new Set(same), new Set([500]));
        assert.equal((await store.listIdRanges()).length, 501);
      });
    });

    describe('run logs', () => {
      test('chunks are read back after a seq, oldest first, at most limit, per sandbox', async (store) => {
        await store.insertSandbox(sandbox('sb_1', 'usr_alice'));
        await store.insertSandbox(sandbox('sb_2', 'usr_alice'));
        const chunks: LogChunk[] = Array.from({ length: 5 }, (_, i) => ({ seq: i + 1, stream: i % 2 ? 'stderr' : 'stdout', data: bytes(100 + i, i) }));
        // Every byte value survives, NUL and invalid UTF-8 included.
        chunks.push({ seq: 6, stream: 'stdout', data: bytes(256) });
        for (const chunk of chunks) await store.appendLog('sb_1', chunk);
        await store.appendLog('sb_2', { seq: 1, stream: 'stdout', data: bytes(3, 9) });
        assert.deepEqual(plain(await store.readLogs('sb_1', 0, 100)), plain(chunks));
        assert.deepEqual(plain(await store.readLogs('sb_1', 2, 2)), plain(chunks.slice(2, 4)));
        assert.deepEqual(plain(await store.readLogs('sb_1', 5, 100)), plain(chunks.slice(5)));
        assert.deepEqual(await store.readLogs('sb_1', 6, 100), []);
        assert.deepEqual(plain(await store.readLogs('sb_2', 0, 100)), [{ seq: 1, stream: 'stdout', data: [9, 10, 11] }]);
        assert.deepEqual(await store.readLogs('sb_none', 0, 100), []);
        assert.equal((await store.usageOf('usr_alice')).logBytes, 100 + 101 + 102 + 103 + 104 + 256 + 3);
      });

      test('deleteLogs removes one sandbox\'s chunks and their bytes from its owner\'s use', async (store) => {
        await store.insertSandbox(sandbox('sb_1', 'usr_alice', { status: 'completed' }));
        await store.insertSandbox(sandbox('sb_2', 'usr_alice', { status: 'completed' }));
        await store.appendLog('sb_1', { seq: 1, stream: 'stdout', data: bytes(30) });
        await store.appendLog('sb_1', { seq: 2, stream: 'stdout', data: bytes(20) });
        await store.appendLog('sb_2', { seq: 1, stream: 'stderr', data: bytes(5) });
        await store.deleteLogs('sb_1');
        await store.deleteLogs('sb_1');
        assert.deepEqual(await store.readLogs('sb_1', 0, 100), []);
        assert.equal((await store.readLogs('sb_2', 0, 100)).length, 1);
        assert.equal((await store.usageOf('usr_alice')).logBytes, 5);
        assert.deepEqual((await store.listEndedRuns('usr_alice')).map((r) => [r.id, r.logBytes]).sort(), [['sb_1', 0], ['sb_2', 5]]);
      });

      test('deleting a sandbox takes its logged bytes off its owner\'s use', async (store) => {
        await store.insertSandbox(sandbox('sb_1', 'usr_alice', { status: 'completed' }));
        await store.insertSandbox(sandbox('sb_2', 'usr_alice', { status: 'completed' }));
        await store.appendLog('sb_1', { seq: 1, stream: 'stdout', data: bytes(30) });
        await store.appendLog('sb_2', { seq: 1, stream: 'stdout', data: bytes(8) });
        assert.equal((await store.usageOf('usr_alice')).logBytes, 38);
        await store.deleteSandbox('sb_1');
        assert.equal((await store.usageOf('usr_alice')).logBytes, 8);
        assert.equal(await store.trimLogs('usr_alice', 8), 0, 'nothing left of the deleted sandbox to trim');
      });

      test('trimLogs removes the oldest sandbox\'s oldest chunks first, cuts the last to its tail, and counts it', async (store) => {
        await store.insertSandbox(sandbox('sb_old', 'usr_alice', { status: 'completed', createdAt: at(1) }));
        await store.insertSandbox(sandbox('sb_new', 'usr_alice', { status: 'running', createdAt: at(2) }));
        await store.insertSandbox(sandbox('sb_bob', 'usr_bob', { status: 'completed', createdAt: at(0) }));
        // Appended newest sandbox first: the order is the sandboxes' age, not the appends'.
        await store.appendLog('sb_new', { seq: 1, stream: 'stdout', data: bytes(100, 100) });
        await store.appendLog('sb_old', { seq: 1, stream: 'stdout', data: bytes(100, 0) });
        await store.appendLog('sb_old', { seq: 2, stream: 'stderr', data: bytes(100, 50) });
        await store.appendLog('sb_bob', { seq: 1, stream: 'stdout', data: bytes(500) });
        const logs = async (id: string) => plain(await store.readLogs(id, 0, 100));
        const trimmed = async (id: string) => (await store.getSandbox(id))?.logTrimmedBytes;

        assert.equal(await store.trimLogs('usr_alice', 300), 0, 'within the limit');
        assert.equal(await store.trimLogs('usr_alice', 250), 50);
        assert.deepEqual(await logs('sb_old'), [
          { seq: 1, stream: 'stdout', data: [...bytes(50, 50)] },
          { seq: 2, stream: 'stderr', data: [...bytes(100, 50)] },
        ]);
        assert.equal(await trimmed('sb_old'), 50);
        assert.equal((await store.usageOf('usr_alice')).logBytes, 250);

        // The rest of chunk 1 and 80 bytes of chunk 2.
        assert.equal(await store.trimLogs('usr_alice', 120), 130);
        assert.deepEqual(await logs('sb_old'), [{ seq: 2, stream: 'stderr', data: [...bytes(20, 130)] }]);
        assert.equal(await trimmed('sb_old'), 180);
        assert.equal(await trimmed('sb_new'), 0);

        // Past the oldest sandbox into the next one.
        assert.equal(await store.trimLogs('usr_alice', 50), 70);
        assert.deepEqual(await logs('sb_old'), []);
        assert.deepEqual(await logs('sb_new'), [{ seq: 1, stream: 'stdout', data: [...bytes(50, 150)] }]);
        assert.deepEqual([await trimmed('sb_old'), await trimmed('sb_new')], [200, 50]);
        assert.equal((await store.usageOf('usr_alice')).logBytes, 50);
        assert.deepEqual((await store.listEndedRuns('usr_alice')).map((r) => [r.id, r.logBytes]), [['sb_old', 0]]);

        // Output after a trim is kept and counted as before.
        await store.appendLog('sb_new', { seq: 2, stream: 'stdout', data: bytes(10, 7) });
        assert.deepEqual((await logs('sb_new')).map((c) => c.seq), [1, 2]);
        assert.equal((await store.usageOf('usr_alice')).logBytes, 60);
        assert.equal(await store.trimLogs('usr_alice', 0), 60);
        assert.deepEqual(await logs('sb_new'), []);
        assert.equal(await trimmed('sb_new'), 110);
        assert.equal((await store.usageOf('usr_alice')).logBytes, 0);

        // Another owner's output is never touched.
        assert.equal((await logs('sb_bob'))[0]?.data.length, 500);
        assert.equal(await trimmed('sb_bob'), 0);
        assert.equal((await store.usageOf('usr_bob')).logBytes, 500);
      });

      test('trimLogs over a sandbox of 1,000 small chunks keeps exactly the newest bytes', async (store) => {
        await store.insertSandbox(sandbox('sb_1', 'usr_alice', { status: 'completed' }));
        for (let seq = 1; seq <= 1000; seq++) await store.appendLog('sb_1', { seq, stream: 'stdout', data: bytes(10, seq) });
        assert.equal(await store.trimLogs('usr_alice', 25), 9975);
        assert.deepEqual(plain(await store.readLogs('sb_1', 0, 2000)), [
          { seq: 998, stream: 'stdout', data: [...bytes(5, 998 + 5)] },
          { seq: 999, stream: 'stdout', data: [...bytes(10, 999)] },
          { seq: 1000, stream: 'stdout', data: [...bytes(10, 1000)] },
        ]);
        assert.equal((await store.getSandbox('sb_1'))?.logTrimmedBytes, 9975);
        assert.equal((await store.usageOf('usr_alice')).logBytes, 25);
      });

      test('trims at once remove the excess once; with appends among them the counts stay those of the chunks', async (store) => {
        for (let i = 0; i < 4; i++) {
          await store.insertSandbox(sandbox(`sb_${i}`, 'usr_alice', { status: 'completed', createdAt: at(i) }));
          for (let seq = 1; seq <= 5; seq++) await store.appendLog(`sb_${i}`, { seq, stream: 'stdout', data: bytes(50) });
        }
        const removed = await Promise.all(Array.from({ length: 6 }, () => store.trimLogs('usr_alice', 300)));
        assert.equal(removed.reduce((a, b) => a + b, 0), 700);
        assert.equal((await store.usageOf('usr_alice')).logBytes, 300);

        const held = async (id: string) => (await store.readLogs(id, 0, 1000)).reduce((sum, c) => sum + c.data.length, 0);
        await Promise.all([
          ...Array.from({ length: 20 }, (_, k) => store.appendLog(`sb_${k % 4}`, { seq: 100 + k, stream: 'stderr', data: bytes(7 + k) })),
          ...Array.from({ length: 5 }, (_, k) => store.trimLogs('usr_alice', 200 - 20 * k)),
        ]);
        let total = 0;
        for (let i = 0; i < 4; i++) {
          const bytesHeld = await held(`sb_${i}`);
          total += bytesHeld;
          const record = await store.getSandbox(`sb_${i}`);
          assert.equal(bytesHeld + (record?.logTrimmedBytes ?? 0), 250 + Array.from({ length: 5 }, (_, j) => 7 + i + 4 * j).reduce((a, b) => a + b, 0), `sb_${i}: kept + trimmed = written`);
          assert.equal((await store.listEndedRuns('usr_alice')).find((r) => r.id === `sb_${i}`)?.logBytes, bytesHeld);
        }
        assert.equal((await store.usageOf('usr_alice')).logBytes, total);
        assert.ok(total > 0);
      });
    });

    describe('usage and quota overrides', () => {
      test('usage counts live sandboxes and their limits, and the logged bytes of all', async (store) => {
        assert.deepEqual(await store.usageOf('usr_alice'), zeroUsage);
        assert.deepEqual(await store.usageOf('usr_nobody'), zeroUsage);
        for (const [i, status] of allStatuses.entries()) {
          await store.insertSandbox(sandbox(`sb_${status}`, 'usr_alice', { status, limits: { cpus: 0.5, memoryMb: 100 * (i + 1), pids: 10 * (i + 1), openFiles: 1024 } }));
          await store.appendLog(`sb_${status}`, { seq: 1, stream: 'stdout', data: bytes(i + 1) });
        }
        await store.insertSandbox(sandbox('sb_bob', 'usr_bob', { status: 'running' }));
        // pending, running, sleeping: the first three.
        assert.deepEqual(await store.usageOf('usr_alice'), { sandboxes: 3, cpus: 1.5, memoryMb: 600, pids: 60, logBytes: 21 });
        await store.updateSandbox('sb_running', { status: 'stopped' }, at(5));
        await store.updateSandbox('sb_sleeping', { limits: { cpus: 2, memoryMb: 1000, pids: 5, openFiles: 1024 } }, at(5));
        assert.deepEqual(await store.usageOf('usr_alice'), { sandboxes: 2, cpus: 2.5, memoryMb: 1100, pids: 15, logBytes: 21 });
        assert.deepEqual(await store.usageOf('usr_bob'), { sandboxes: 1, cpus: 1, memoryMb: 256, pids: 64, logBytes: 0 });
      });

      test('overrides: a change sets the keys it names, null removes one, absent keys stay; per user', async (store) => {
        assert.deepEqual(await store.getQuotaOverrides('usr_alice'), {});
        assert.deepEqual(await store.changeQuotaOverrides('usr_alice', { sandboxes: 3, cpus: 4 }, at(1)), { sandboxes: 3, cpus: 4 });
        assert.deepEqual(await store.changeQuotaOverrides('usr_alice', { cpus: null, memoryMb: 1024, timeoutSec: undefined }, at(2)), { sandboxes: 3, memoryMb: 1024 });
        assert.deepEqual(await store.getQuotaOverrides('usr_alice'), { sandboxes: 3, memoryMb: 1024 });
        assert.deepEqual(await store.changeQuotaOverrides('usr_alice', { cpus: null }, at(3)), { sandboxes: 3, memoryMb: 1024 }, 'removing an absent key changes nothing');
        assert.deepEqual(await store.getQuotaOverrides('usr_bob'), {});
        const all = { sandboxes: 0, cpus: 0.5, memoryMb: 64, pids: 32, timeoutSec: 10, logBytes: 1_000_000_000_000 };
        assert.deepEqual(await store.changeQuotaOverrides('usr_bob', all, at(4)), all);
        assert.deepEqual(await store.getQuotaOverrides('usr_bob'), all);
        assert.deepEqual(await store.changeQuotaOverrides('usr_alice', { sandboxes: null, memoryMb: null }, at(5)), {});
        assert.deepEqual(await store.getQuotaOverrides('usr_alice'), {});
        assert.deepEqual(await store.getQuotaOverrides('usr_bob'), all);
      });

      test('changes of different keys at once all stay', async (store) => {
        const changes = [{ sandboxes: 5 }, { cpus: 2 }, { memoryMb: 512 }, { pids: 100 }, { timeoutSec: 60 }, { logBytes: 1000 }];
        await Promise.all(changes.map((change, i) => store.changeQuotaOverrides('usr_alice', change, at(i))));
        assert.deepEqual(await store.getQuotaOverrides('usr_alice'), Object.assign({}, ...changes));
      });
    });

    describe('close', () => {
      test('close resolves; a reopened store has everything written before', async (store, h, t) => {
        if (!h.reopen) return t.skip('a store in memory keeps nothing past close');
        await store.createToken({ id: 'tok_1', userId: 'usr_alice', tokenHash: 'f'.repeat(64), description: '', createdAt: at(1), lastUsedAt: null });
        const record = sandbox('sb_1', 'usr_alice', { status: 'stopped', name: 'keep' });
        await store.insertSandbox(record);
        await store.appendLog('sb_1', { seq: 1, stream: 'stdout', data: bytes(12) });
        await store.allocateIdRange('sb_1');
        await store.changeQuotaOverrides('usr_alice', { cpus: 3 }, at(2));
        const again = await h.closeAndReopen();
        assert.equal((await again.getUserByName('alice'))?.id, 'usr_alice');
        assert.equal((await again.findTokenByHash('f'.repeat(64)))?.id, 'tok_1');
        assert.deepEqual(await again.getSandbox('sb_1'), record);
        assert.deepEqual(plain(await again.readLogs('sb_1', 0, 10)), [{ seq: 1, stream: 'stdout', data: [...bytes(12)] }]);
        assert.equal((await again.usageOf('usr_alice')).logBytes, 12);
        assert.deepEqual(await again.listIdRanges(), [{ holderId: 'sb_1', idRange: 0 }]);
        assert.deepEqual(await again.getQuotaOverrides('usr_alice'), { cpus: 3 });
        await assert.rejects(again.insertSandbox(sandbox('sb_2', 'usr_alice', { name: 'keep', status: 'pending' })), { code: 'SANDBOX_NAME_TAKEN' });
      });
    });
  });
}
