// The workspace commands through the real `roost` binary, the SDK and the HTTP API against a
// test daemon whose runtime and workspaces are the fakes (host processes in the workspace's
// dir): what the CLI says and exits with. The same journeys with real sandboxes and the btrfs
// workspaces are in workspaces.e2e.test.ts.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { runCli, startDaemon, type FakeWorkspaces, type TestDaemon } from '@roost/testkit';

describe('roost workspace, resize, sync and -w through the CLI (fake runtime and workspaces)', () => {
  let daemon: TestDaemon;
  let roost: (args: string[]) => ReturnType<typeof runCli>;

  before(async () => {
    daemon = await startDaemon({ driver: 'fake', workspaces: 'fake' });
    const env = { ROOST_API_URL: daemon.url, ROOST_API_TOKEN: daemon.adminToken };
    roost = (args) => runCli(args, { env });
  });
  after(async () => {
    await daemon?.close();
  });

  it('run -w keeps files for the next run; workspace list and show say where it stands', async () => {
    const first = await roost(['run', '-w', 'proj', 'echo pkg > installed']);
    assert.equal(first.exitCode, 0, first.stderr);
    const second = await roost(['run', '-w', 'proj', 'cat installed']);
    assert.equal(second.stdout, 'pkg\n');
    const list = await roost(['workspace', 'list']);
    assert.match(list.stdout, /^NAME\s+ID\s+DISK\s+USED BY\s+LAST SYNCED\nproj\s+ws_\S+\s+4 bytes \(no limit\)\s+-\s+\S+ ago/);
    const shown = await roost(['workspace', 'show', 'proj']);
    assert.match(shown.stdout, /^sync\s+last synced \S+ \(\S+ ago\); 0 bytes pending$/m);
    const json = JSON.parse((await roost(['workspace', 'list', '--json'])).stdout) as { name: string; usedBytes: number }[];
    assert.deepEqual(json.map((ws) => [ws.name, ws.usedBytes]), [['proj', 4]]);
    const quota = await roost(['quota']);
    assert.match(quota.stdout, /^workspaces\s+1\s+200\s+daemon$/m);
    assert.match(quota.stdout, /^workspace disk\s+0 bytes\s+10 TiB\s+daemon$/m);
  });

  it('new gets a workspace of its name: stop/start keep files, status shows it, rm keeps it and says so', async () => {
    assert.equal((await roost(['new', 'dev', '--disk', '2'])).exitCode, 0);
    assert.equal((await roost(['exec', 'dev', 'echo kept > notes'])).exitCode, 0);
    const status = await roost(['status', 'dev']);
    assert.match(status.stdout, /^workspace\s+dev \(ws_\S+\)$/m);
    assert.match(status.stdout, /^disk\s+5 bytes used, limit 2 GiB$/m);
    assert.match((await roost(['stop', 'dev'])).stdout, /^Stopped dev\.$/m);
    assert.equal((await roost(['start', 'dev'])).exitCode, 0);
    assert.equal((await roost(['exec', 'dev', 'cat notes'])).stdout, 'kept\n');
    const inUse = await roost(['workspace', 'rm', 'dev']);
    assert.equal(inUse.exitCode, 1);
    assert.match(inUse.stderr, /workspace dev is in use by sandbox dev \(sb_\S+, running\) \(WORKSPACE_IN_USE\)/);
    const rm = await roost(['rm', 'dev']);
    assert.match(rm.stdout, /^Removed dev; its workspace dev is kept \(roost workspace rm dev removes it\)\.$/m);
    assert.equal((await roost(['workspace', 'rm', 'dev'])).exitCode, 0);
    const gone = await roost(['workspace', 'show', 'dev']);
    assert.equal(gone.exitCode, 1);
    assert.match(gone.stderr, /WORKSPACE_NOT_FOUND/);
  });

  it('a second live sandbox on one workspace is refused, naming the first', async () => {
    assert.equal((await roost(['new', 'box', '-w', 'shared'])).exitCode, 0);
    const second = await roost(['run', '-w', 'shared', 'true']);
    assert.equal(second.exitCode, 1);
    assert.match(second.stderr, /workspace shared is in use by sandbox box \(sb_\S+, running\)/);
    assert.match(second.stderr, /roost stop <name>/);
    assert.equal((await roost(['rm', 'box'])).exitCode, 0);
  });

  it('fork, sync, snapshots, restore and resize; usage errors exit 2', async () => {
    assert.equal((await roost(['new', 'src'])).exitCode, 0);
    assert.equal((await roost(['exec', 'src', 'echo v1 > f'])).exitCode, 0);
    const synced = await roost(['sync', 'src']);
    assert.match(synced.stdout, /^Synced src: snapshot (\S+) \(3 bytes, 1 files\)\.$/m);
    const snapshot = /snapshot (\S+)/.exec(synced.stdout)![1]!;
    assert.equal((await roost(['exec', 'src', 'echo v2 > f'])).exitCode, 0);
    const fork = await roost(['workspace', 'fork', 'src', 'copy']);
    assert.match(fork.stdout, /^Workspace copy \(ws_\S+\) forked from src\./m);
    assert.equal((await roost(['run', '-w', 'copy', 'cat f'])).stdout, 'v2\n');
    const snapshots = await roost(['workspace', 'snapshots', 'src']);
    assert.match(snapshots.stdout, new RegExp(`^${snapshot}\\s`, 'm'));
    const refused = await roost(['workspace', 'restore', 'src', snapshot]);
    assert.equal(refused.exitCode, 1);
    assert.match(refused.stderr, /stop it first \(WORKSPACE_IN_USE\)/);
    assert.equal((await roost(['stop', 'src'])).exitCode, 0);
    assert.equal((await roost(['workspace', 'restore', 'src', snapshot])).exitCode, 0);
    assert.equal((await roost(['start', 'src'])).exitCode, 0);
    assert.equal((await roost(['exec', 'src', 'cat f'])).stdout, 'v1\n');
    const resized = await roost(['resize', 'src', '--disk', '0.5']);
    assert.match(resized.stdout, /^src: workspace 3 bytes of 512 MiB\.$/m);
    for (const args of [['resize', 'src'], ['resize', 'src', '--disk', 'lots'], ['run', '--disk', '0', 'true']]) {
      const result = await roost(args);
      assert.equal(result.exitCode, 2, `${args.join(' ')}: ${result.stderr}`);
    }
    const orphanDisk = await roost(['run', '--disk', '1', 'true']);
    assert.equal(orphanDisk.exitCode, 1);
    assert.match(orphanDisk.stderr, /--base and --disk describe a workspace: name one with -w/);
  });

  it('stop says when the final sync did not reach the store; status shows the failure', async () => {
    assert.equal((await roost(['new', 'fragile'])).exitCode, 0);
    const fake = daemon.daemon.workspaces as FakeWorkspaces;
    fake.failSyncs('connect ECONNREFUSED 127.0.0.1:9000');
    try {
      const stopped = await roost(['stop', 'fragile']);
      assert.equal(stopped.exitCode, 0);
      assert.match(stopped.stderr, /workspace fragile is not yet safe in the store: .*ECONNREFUSED.* \(its local copy is kept\)/);
      const status = await roost(['status', 'fragile']);
      assert.match(status.stdout, /^sync\s+sync failing since \S+: .*ECONNREFUSED/m);
    } finally {
      fake.failSyncs(null);
    }
  });
});
