// Quotas end to end: a real roostd with the OCI driver (and a warm pool), a second user and
// the admin, each driven through the real `roost` binary.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Roost, RoostApiError, type Quota } from '@roost/sdk';
import { runCli, startDaemon, type TestDaemon } from '@roost/testkit';

describe('quotas through the CLI against a real daemon', () => {
  let daemon: TestDaemon;
  let admin: Record<string, string>;
  let bob: Record<string, string>;
  const roost = (as: Record<string, string>, args: string[]) => runCli(args, { env: as });
  const quotaOf = async (as: Record<string, string>, user?: string) => {
    const result = await roost(as, ['quota', '--json', ...(user ? [user] : [])]);
    assert.equal(result.exitCode, 0, result.stderr);
    return JSON.parse(result.stdout) as Quota;
  };

  before(async () => {
    daemon = await startDaemon({
      driver: 'oci',
      config: {
        defaults: { memoryMb: 256 },
        quota: { sandboxes: 10, memoryMb: 1024, timeoutSec: 60, logBytes: 4096 },
        pool: { size: 2, memoryShare: 0.5 },
      },
    });
    admin = { ROOST_API_URL: daemon.url, ROOST_API_TOKEN: daemon.adminToken };
    bob = { ROOST_API_URL: daemon.url, ROOST_API_TOKEN: await daemon.createUserToken('bob') };
  });
  after(async () => {
    await daemon?.close();
  });

  it('a second user past its memory quota gets QUOTA_EXCEEDED naming limit and use; the admin raises it; then it works', async () => {
    const fresh = await quotaOf(bob);
    assert.equal(fresh.user.name, 'bob');
    assert.deepEqual(fresh.usage, { sandboxes: 0, cpus: 0, memoryMb: 0, pids: 0, logBytes: 0 });
    assert.equal(fresh.limits.memoryMb, 1024);

    assert.equal((await roost(bob, ['new', 'b1', '--memory', '512'])).exitCode, 0);
    assert.equal((await roost(bob, ['new', 'b2', '--memory', '512'])).exitCode, 0);
    const refused = await roost(bob, ['new', 'b3', '--memory', '512']);
    assert.equal(refused.exitCode, 1);
    assert.equal(refused.stdout, '');
    assert.match(
      refused.stderr,
      /^roost: over your quota: memory: 1024 MB of 1024 MB in use by 2 live sandboxes; this sandbox asks 512 MB \(QUOTA_EXCEEDED\)\n  hint: .*roost quota/,
    );
    assert.equal((await roost(bob, ['status', 'b3'])).exitCode, 1, 'the refused sandbox does not exist');

    // Over HTTP it is a 403 with the same code (waiting would not help, so not 429).
    const sdk = new Roost({ apiUrl: daemon.url, token: bob.ROOST_API_TOKEN });
    await assert.rejects(sdk.sandboxes.create({ name: 'b3', memoryMb: 512 }), (error: RoostApiError) => {
      assert.equal(error.status, 403);
      assert.equal(error.code, 'QUOTA_EXCEEDED');
      return true;
    });

    // Bob cannot raise his own; the admin can.
    const selfServe = await roost(bob, ['quota', 'set', 'bob', '--memory', '4096']);
    assert.equal(selfServe.exitCode, 1);
    assert.match(selfServe.stderr, /FORBIDDEN/);
    const raised = await roost(admin, ['quota', 'set', 'bob', '--memory', '2048']);
    assert.equal(raised.exitCode, 0, raised.stderr);
    assert.match(raised.stdout, /^memory\s+1024 MB\s+2048 MB\s+set by an admin$/m);

    const created = await roost(bob, ['new', 'b3', '--memory', '512']);
    assert.equal(created.exitCode, 0, created.stderr);
    const inside = await roost(bob, ['exec', 'b3', 'echo alive']);
    assert.equal(inside.stdout, 'alive\n');
    const shown = await roost(bob, ['quota']);
    assert.match(shown.stdout, /^Quota of bob /);
    assert.match(shown.stdout, /^sandboxes\s+3\s+10\s+default$/m);
    assert.match(shown.stdout, /^memory\s+1536 MB\s+2048 MB\s+set by an admin$/m);
    // The admin sees the same from outside.
    assert.deepEqual((await quotaOf(admin, 'bob')).usage.memoryMb, 1536);
  });

  it("the admin's own defaults apply to itself until it raises them", async () => {
    assert.equal((await roost(admin, ['new', 'a1', '--memory', '512'])).exitCode, 0);
    assert.equal((await roost(admin, ['new', 'a2', '--memory', '512'])).exitCode, 0);
    const refused = await roost(admin, ['new', 'a3', '--memory', '512']);
    assert.equal(refused.exitCode, 1);
    assert.match(refused.stderr, /memory: 1024 MB of 1024 MB in use by 2 live sandboxes; this sandbox asks 512 MB \(QUOTA_EXCEEDED\)/);
    assert.equal((await roost(admin, ['quota', 'set', 'admin', '--memory', '1536'])).exitCode, 0);
    assert.equal((await roost(admin, ['new', 'a3', '--memory', '512'])).exitCode, 0);
    // Back to the default: the three live ones stay, a fourth is refused again.
    assert.equal((await roost(admin, ['quota', 'set', 'admin', '--memory', 'default'])).exitCode, 0);
    assert.match((await roost(admin, ['new', 'a4', '--memory', '16'])).stderr, /memory: 1536 MB of 1024 MB in use by 3 live sandboxes/);
    for (const name of ['a1', 'a2', 'a3']) assert.equal((await roost(admin, ['rm', name])).exitCode, 0);
  });

  it('20 parallel creates against a limit of 5 make exactly 5, with a warm pool on', async () => {
    const carol = { ROOST_API_URL: daemon.url, ROOST_API_TOKEN: await daemon.createUserToken('carol') };
    assert.equal((await roost(admin, ['quota', 'set', 'carol', '--sandboxes', '5'])).exitCode, 0);
    const sdk = new Roost({ apiUrl: daemon.url, token: carol.ROOST_API_TOKEN });
    const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => sdk.sandboxes.create({ name: `c${i}`, memoryMb: 64 })));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 5);
    for (const r of results) if (r.status === 'rejected') assert.equal((r.reason as RoostApiError).code, 'QUOTA_EXCEEDED');
    assert.equal((await sdk.sandboxes.list()).length, 5);
    const listed = await roost(carol, ['ls', '--json']);
    assert.equal((JSON.parse(listed.stdout) as unknown[]).length, 5);
  });

  it('a timeout over the quota, or longer than a timer can hold, is refused before anything runs', async () => {
    const within = await roost(bob, ['run', '--timeout', '60', 'echo in time']);
    assert.equal(within.exitCode, 0, within.stderr);
    assert.equal(within.stdout, 'in time\n');
    const over = await roost(bob, ['run', '--timeout', '61', 'echo never']);
    assert.equal(over.exitCode, 1);
    assert.equal(over.stdout, '');
    assert.match(over.stderr, /over your quota: timeout: this run asks 61 s; the longest you may ask is 60 s \(QUOTA_EXCEEDED\)/);
    // 2^31 ms and more would fire at once: refused, for run and exec alike, whatever the quota.
    // run's CLI knows the bound (a usage error); exec's asks the daemon, which refuses it all the same.
    const runTooLong = await roost(bob, ['run', '--timeout', '2147484', 'echo never']);
    assert.equal(runTooLong.exitCode, 2, runTooLong.stderr);
    assert.equal(runTooLong.stdout, '');
    assert.match(runTooLong.stderr, /--timeout expects a number above 0 and at most 2147483, got "2147484"/);
    const execTooLong = await roost(bob, ['exec', '--timeout', '99999999999', 'b1', 'echo never']);
    assert.equal(execTooLong.exitCode, 1, execTooLong.stderr);
    assert.equal(execTooLong.stdout, '');
    assert.match(execTooLong.stderr, /timeoutSec: at most 2147483 s \(about 24\.8 days\): the longest a timer can wait \(VALIDATION_FAILED\)/);
    const setTooLong = await roost(admin, ['quota', 'set', 'bob', '--timeout', '2147484']);
    assert.equal(setTooLong.exitCode, 1);
    assert.match(setTooLong.stderr, /the longest a timer can wait/);
  });

  it("stored output past the log quota is trimmed oldest first, and roost logs says so", async () => {
    const first = await roost(bob, ['run', '--json', "head -c 3000 /dev/zero | tr '\\0' A"]);
    const firstId = (JSON.parse(first.stdout) as { sandbox: { id: string } }).sandbox.id;
    assert.equal((await roost(bob, ['logs', firstId])).stdout, 'A'.repeat(3000), 'whole while under the quota');
    const second = await roost(bob, ['run', '--json', "head -c 3000 /dev/zero | tr '\\0' B"]);
    const secondId = (JSON.parse(second.stdout) as { sandbox: { id: string } }).sandbox.id;

    // 4096 bytes kept of 6008: the 8 of the earlier 'in time' run went first, then 1904 of this one.
    const usage = (await quotaOf(bob)).usage;
    assert.equal(usage.logBytes, 4096);
    const trimmed = await roost(bob, ['logs', firstId]);
    assert.match(trimmed.stderr, /^\[roost: earlier output was trimmed \(1904 bytes, oldest first\) to keep your stored logs within your quota; `roost quota` shows it\]\n$/);
    assert.equal(trimmed.stdout, 'A'.repeat(1096));
    const newer = await roost(bob, ['logs', secondId]);
    assert.equal(newer.stdout, 'B'.repeat(3000));
    assert.equal(newer.stderr, '');
    assert.match((await roost(bob, ['status', firstId])).stdout, /^logs\s+the oldest 1904 bytes were trimmed/m);
  });
});
