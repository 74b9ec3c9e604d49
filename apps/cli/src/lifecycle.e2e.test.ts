// The life cycle after create, end to end: a real roostd with the OCI driver (small retention
// limits), driven through the real `roost` binary: stop, start, restart, a stopped sandbox's
// name, ended runs under retention, prune, run --json's final sandbox, ls, and set on a
// running sandbox (limits read back inside it, a user the image lacks refused at once).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { runCli, startDaemon, type TestDaemon } from '@roost/testkit';

interface SandboxJson {
  id: string;
  name: string;
  status: string;
  exitCode: number | null;
  memoryMb: number;
  cpus: number;
  pidsLimit: number;
  openFiles: number;
  defaultUser: string;
  allowNet: string[];
}

describe('roost start, restart, prune, retention and set on a real daemon', () => {
  let daemon: TestDaemon;
  let adminEnv: Record<string, string>;
  const roostAs = (env: Record<string, string>) => (args: string[]) => runCli(args, { env });
  let roost: (args: string[]) => ReturnType<typeof runCli>;
  const json = <T>(text: string) => JSON.parse(text) as T;

  before(async () => {
    daemon = await startDaemon({ driver: 'oci', config: { runRetention: { count: 3, bytes: 100_000 } } });
    adminEnv = { ROOST_API_URL: daemon.url, ROOST_API_TOKEN: daemon.adminToken };
    roost = roostAs(adminEnv);
  });
  after(async () => {
    await daemon?.close();
  });

  it('stop keeps a sandbox and its name; start and restart bring it back with its id and settings', async () => {
    const made = await roost(['new', 'dev', '--json', '--memory', '300', '--pids', '90', '-e', 'KEPT=yes']);
    assert.equal(made.exitCode, 0, made.stderr);
    const { id } = json<SandboxJson>(made.stdout);
    assert.equal((await roost(['exec', 'dev', 'echo before > /root/file'])).exitCode, 0);
    assert.equal((await roost(['stop', 'dev'])).exitCode, 0);
    const listed = await roost(['ls', '--all']);
    assert.match(listed.stdout, /dev\s+sb_\S+\s+stopped/);

    const twin = await roost(['new', 'dev']);
    assert.equal(twin.exitCode, 1);
    assert.match(twin.stderr, /^roost: you already have a stopped sandbox named "dev".*\(SANDBOX_NAME_TAKEN\)/m);
    assert.match(twin.stderr, /roost start <name>/);
    assert.match(twin.stderr, /roost rm <name>/);
    const twinRun = await roost(['run', '--name', 'dev', 'true']);
    assert.equal(twinRun.exitCode, 1);
    assert.match(twinRun.stderr, /SANDBOX_NAME_TAKEN/);

    const started = await roost(['start', 'dev']);
    assert.equal(started.exitCode, 0, started.stderr);
    assert.match(started.stdout, /^Sandbox dev is running \(sb_/);
    const status = json<SandboxJson>((await roost(['status', '--json', 'dev'])).stdout);
    assert.equal(status.id, id);
    assert.equal(status.status, 'running');
    assert.equal(status.memoryMb, 300);
    // Its workspace is mounted again: the file is there, and so are the env and limits.
    const inside = await roost(['exec', 'dev', 'echo "$KEPT $(hostname)"; cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max; cat /root/file']);
    assert.equal(inside.stdout, 'yes dev\n90\nbefore\n');

    assert.equal((await roost(['exec', 'dev', 'echo again > /root/file'])).exitCode, 0);
    const restarted = await roost(['restart', 'dev', '--json']);
    assert.equal(restarted.exitCode, 0, restarted.stderr);
    assert.deepEqual([json<SandboxJson>(restarted.stdout).id, json<SandboxJson>(restarted.stdout).status], [id, 'running']);
    assert.equal((await roost(['exec', 'dev', 'cat /root/file'])).stdout, 'again\n');

    const help = await roost(['start', '--help']);
    assert.match(help.stdout, /the files written in it before the stop \(installed packages\n?\s*included\) are there/);
    assert.equal((await roost(['rm', 'dev'])).exitCode, 0);
    assert.equal((await roost(['workspace', 'rm', 'dev'])).exitCode, 0);
  });

  it('start of an ended run says so; a name shared by two ended runs is refused with the ids to use', async () => {
    const first = json<{ sandbox: SandboxJson }>((await roost(['run', '--json', '--name', 'twice', 'true'])).stdout).sandbox;
    const again = await roost(['start', 'twice']);
    assert.equal(again.exitCode, 1);
    assert.match(again.stderr, /SANDBOX_ENDED/);
    const second = json<{ sandbox: SandboxJson }>((await roost(['run', '--json', '--name', 'twice', 'true'])).stdout).sandbox;
    const ambiguous = await roost(['status', 'twice']);
    assert.equal(ambiguous.exitCode, 1);
    assert.match(ambiguous.stderr, new RegExp(`2 ended runs are named "twice": ${second.id}, ${first.id}.*SANDBOX_NAME_AMBIGUOUS`));
    assert.match(ambiguous.stderr, /roost ls --all/);
    assert.equal((await roost(['status', first.id])).exitCode, 0);
  });

  it('run --json reports the sandbox as the run left it; ls shows no exit code beside a running sandbox', async () => {
    const oneShot = await roost(['run', '--json', 'echo out; exit 3']);
    assert.equal(oneShot.exitCode, 3);
    const ended = json<{ sandbox: SandboxJson; exitCode: number; stdout: string }>(oneShot.stdout);
    assert.equal(ended.sandbox.status, 'completed');
    assert.equal(ended.sandbox.exitCode, 3);
    assert.equal(ended.stdout, 'out\n');

    // The SDK: sandbox() is the sandbox at creation while the script runs, the final one after wait().
    const handle = daemon.sdk.run({ script: 'exit 5' });
    assert.equal((await handle.sandbox())?.status, 'running');
    assert.equal((await handle.wait()).exitCode, 5);
    assert.deepEqual([(await handle.sandbox())?.status, (await handle.sandbox())?.exitCode], ['completed', 5]);

    const kept = await roost(['run', '--json', '-p', '--name', 'kept-run', 'exit 3']);
    assert.equal(kept.exitCode, 3);
    const keptJson = json<{ sandbox: SandboxJson }>(kept.stdout);
    assert.equal(keptJson.sandbox.status, 'running');
    assert.equal(keptJson.sandbox.exitCode, 3);

    const listed = await roost(['ls']);
    const line = listed.stdout.split('\n').find((text) => text.startsWith('kept-run'));
    assert.ok(line, listed.stdout);
    assert.match(line, /\srunning\s/);
    assert.doesNotMatch(line, /exit/);
    const all = await roost(['ls', '--all']);
    assert.match(all.stdout, new RegExp(`${ended.sandbox.id}\\s+completed \\(exit 3\\)`));
    assert.equal((await roost(['rm', 'kept-run'])).exitCode, 0);
  });

  it('keeps at most 3 ended runs and 100,000 bytes of their logs per user, oldest removed first, with their logs', async () => {
    const carol = roostAs({ ROOST_API_URL: daemon.url, ROOST_API_TOKEN: await daemon.createUserToken('carol') });
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const result = await carol(['run', '--json', `echo run-${i}`]);
      assert.equal(result.exitCode, 0, result.stderr);
      ids.push(json<{ sandbox: SandboxJson }>(result.stdout).sandbox.id);
    }
    const listIds = async () => json<SandboxJson[]>((await carol(['ls', '--all', '--json'])).stdout).map((sandbox) => sandbox.id);
    assert.deepEqual(await listIds(), ids.slice(1).reverse(), 'the fourth run pushed out the first');
    const gone = await carol(['logs', ids[0]!]);
    assert.equal(gone.exitCode, 1);
    assert.match(gone.stderr, /SANDBOX_NOT_FOUND/);
    assert.equal((await carol(['logs', ids[1]!])).stdout, 'run-1\n');

    // Two runs of 60,000 bytes: together past 100,000, so only the newer stays (with the whole log).
    const big: string[] = [];
    for (let i = 0; i < 2; i++) {
      const result = await carol(['run', '--json', 'head -c 60000 /dev/zero | tr "\\0" x']);
      big.push(json<{ sandbox: SandboxJson }>(result.stdout).sandbox.id);
    }
    assert.deepEqual(await listIds(), [big[1]]);
    assert.equal((await carol(['logs', big[1]!])).stdout.length, 60_000);
  });

  it('prune removes ended runs, --stopped also stopped sandboxes, never a running one; --json lists what went', async () => {
    const dave = roostAs({ ROOST_API_URL: daemon.url, ROOST_API_TOKEN: await daemon.createUserToken('dave') });
    assert.equal((await dave(['new', 'live'])).exitCode, 0);
    assert.equal((await dave(['new', 'parked'])).exitCode, 0);
    assert.equal((await dave(['stop', 'parked'])).exitCode, 0);
    const run = json<{ sandbox: SandboxJson }>((await dave(['run', '--json', 'echo x'])).stdout).sandbox;
    const pruned = await dave(['prune', '--json']);
    assert.equal(pruned.exitCode, 0, pruned.stderr);
    const removed = json<{ removed: SandboxJson[] }>(pruned.stdout).removed;
    assert.deepEqual(removed.map((sandbox) => [sandbox.id, sandbox.status]), [[run.id, 'completed']]);
    assert.match((await dave(['logs', run.id])).stderr, /SANDBOX_NOT_FOUND/);
    const withStopped = await dave(['prune', '--stopped']);
    assert.match(withStopped.stdout, /^Removed parked \(sb_\S+, stopped\)\.$/m);
    const left = json<SandboxJson[]>((await dave(['ls', '--all', '--json'])).stdout);
    assert.deepEqual(left.map((sandbox) => [sandbox.name, sandbox.status]), [['live', 'running']]);
    assert.equal((await dave(['exec', 'live', 'true'])).exitCode, 0);
    assert.equal((await dave(['prune'])).stdout, 'Nothing to remove: no ended runs.\n');
    // Someone else's ended runs are not touched (carol's from the test before, the admin's).
    assert.ok(json<SandboxJson[]>((await roost(['ls', '--all', '--json'])).stdout).length > 0);
    assert.equal((await dave(['rm', 'live'])).exitCode, 0);
  });

  it('set changes the limits of a running sandbox, read back inside it; a user the image lacks is refused at once', async () => {
    assert.equal((await roost(['new', 'tune', '--memory', '256', '--open-files', '1024'])).exitCode, 0);
    const set = await roost(['set', 'tune', '--memory', '320', '--cpus', '0.5', '--pids', '77', '--open-files', '2048']);
    assert.equal(set.exitCode, 0, set.stderr);
    assert.match(set.stdout, /limits: 0\.5 CPUs, 320 MB memory, 77 processes, 2048 open files per process/);
    const inside = await roost(['exec', 'tune', [
      'cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes',
      'cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max',
      'cat /sys/fs/cgroup/cpu.max 2>/dev/null || echo "$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"',
      'ulimit -n',
    ].join('; ')]);
    assert.equal(inside.stdout, `${320 * 1024 * 1024}\n77\n50000 100000\n2048\n`);
    const overQuota = await roost(['set', 'tune', '--memory', String(1024 * 1024)]);
    assert.equal(overQuota.exitCode, 1);
    assert.match(overQuota.stderr, /QUOTA_EXCEEDED/);

    const ghost = await roost(['set', 'tune', '--user', 'ghost']);
    assert.equal(ghost.exitCode, 1);
    assert.match(ghost.stderr, /no user "ghost".*USER_NOT_FOUND/);
    assert.equal(json<SandboxJson>((await roost(['status', '--json', 'tune'])).stdout).defaultUser, 'root', 'the refused user was not kept');
    // A user the image has (Debian's nobody) is taken.
    const nobody = await roost(['set', 'tune', '--user', 'nobody']);
    assert.equal(nobody.exitCode, 0, nobody.stderr);
    assert.match(nobody.stdout, /SSH logins as nobody/);
    // new and run refuse it before anything is kept.
    const newGhost = await roost(['new', 'haunted', '--user', 'ghost']);
    assert.equal(newGhost.exitCode, 1);
    assert.match(newGhost.stderr, /USER_NOT_FOUND/);
    assert.equal((await roost(['status', 'haunted'])).exitCode, 1, 'no record of the refused sandbox');
    const runGhost = await roost(['run', '--user', 'ghost', 'echo never']);
    assert.equal(runGhost.exitCode, 1);
    assert.equal(runGhost.stdout, '');
    assert.match(runGhost.stderr, /USER_NOT_FOUND/);
    assert.equal((await roost(['rm', 'tune'])).exitCode, 0);
  });
});
