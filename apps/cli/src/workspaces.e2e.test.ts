// Workspaces end to end: a real roostd with the OCI driver and its real workspaces (the btrfs
// pool in the data dir), driven through the real `roost` binary. What a user notices: an
// installed package is there in the next run of the workspace, stop/start keep files, a writer
// past --disk fails while the others are unaffected, and a fork of a running sandbox holds what
// was written just before it.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { runCli, startDaemon, type TestDaemon } from '@roost/testkit';

interface WorkspaceJson {
  name: string;
  usedBytes: number;
  limitBytes: number | null;
  usedBy: { name: string } | null;
}

describe('workspaces with real sandboxes, through the CLI', () => {
  let daemon: TestDaemon;
  let roost: (args: string[]) => ReturnType<typeof runCli>;

  before(async () => {
    daemon = await startDaemon({ driver: 'oci' });
    assert.ok(daemon.daemon.workspaces, 'the daemon runs with real workspaces');
    const env = { ROOST_API_URL: daemon.url, ROOST_API_TOKEN: daemon.adminToken };
    roost = (args) => runCli(args, { env });
  });
  after(async () => {
    await daemon?.close();
  });

  it('a package installed by run -w is there in the next run -w; a run without -w leaves nothing', async () => {
    // A real .deb, built and installed with dpkg inside the sandbox (no network needed).
    const install = [
      'set -e; mkdir -p /tmp/p/DEBIAN /tmp/p/usr/bin',
      'printf "Package: roost-hello\\nVersion: 1.0\\nArchitecture: all\\nMaintainer: t <t@example.com>\\nDescription: test\\n" > /tmp/p/DEBIAN/control',
      'printf "#!/bin/sh\\necho hello from the package\\n" > /tmp/p/usr/bin/roost-hello; chmod 755 /tmp/p/usr/bin/roost-hello',
      'dpkg-deb --build /tmp/p /tmp/roost-hello.deb >/dev/null; dpkg -i /tmp/roost-hello.deb >/dev/null',
    ].join('; ');
    const first = await roost(['run', '-w', 'tools', install]);
    assert.equal(first.exitCode, 0, first.stderr);
    const second = await roost(['run', '-w', 'tools', 'dpkg -s roost-hello | grep ^Status; roost-hello']);
    assert.equal(second.exitCode, 0, second.stderr);
    assert.equal(second.stdout, 'Status: install ok installed\nhello from the package\n');
    // Positive control first: the package is on PATH in the workspace; without -w it is not.
    const plain = await roost(['run', 'command -v roost-hello || echo absent']);
    assert.equal(plain.stdout, 'absent\n');
  });

  it('stop and start of `new dev` keep its files; rm keeps the workspace, a new dev finds them', async () => {
    assert.equal((await roost(['new', 'dev'])).exitCode, 0);
    assert.equal((await roost(['exec', 'dev', 'echo kept > /root/notes; echo conf > /etc/roost-test.conf'])).exitCode, 0);
    assert.equal((await roost(['stop', 'dev'])).exitCode, 0);
    assert.equal((await roost(['start', 'dev'])).exitCode, 0);
    assert.equal((await roost(['exec', 'dev', 'cat /root/notes /etc/roost-test.conf'])).stdout, 'kept\nconf\n');
    const status = await roost(['status', 'dev']);
    assert.match(status.stdout, /^workspace\s+dev \(ws_\S+\)$/m);
    assert.match((await roost(['rm', 'dev'])).stdout, /its workspace dev is kept/);
    assert.equal((await roost(['new', 'dev'])).exitCode, 0);
    assert.equal((await roost(['exec', 'dev', 'cat /root/notes'])).stdout, 'kept\n');
    assert.equal((await roost(['rm', 'dev'])).exitCode, 0);
  });

  it('--disk: a writer past the size fails, the host and other workspaces are unaffected', async () => {
    // 64 MiB: 10 MiB fits (positive control), writing 100 MiB more fails partway.
    const big = await roost(['run', '-w', 'small', '--disk', '0.0625', 'head -c 10M /dev/zero > /root/fits && echo fits; head -c 100M /dev/zero > /root/big; echo "exit $?"']);
    assert.match(big.stdout, /^fits\nexit 1\n$/);
    assert.match(big.stderr, /Disk quota exceeded|No space left on device/);
    const other = await roost(['run', '-w', 'roomy', 'head -c 100M /dev/zero > /root/f && echo ok']);
    assert.equal(other.stdout, 'ok\n', other.stderr);
    const shown = JSON.parse((await roost(['workspace', 'show', 'small', '--json'])).stdout) as WorkspaceJson;
    assert.equal(shown.limitBytes, 64 * 1024 * 1024);
    assert.ok(shown.usedBytes > 10 * 1024 * 1024 && shown.usedBytes <= 64 * 1024 * 1024, `used ${shown.usedBytes}`);
  });

  it('fork of a running sandbox has the file written just before; the sandbox runs on', async () => {
    assert.equal((await roost(['new', 'live'])).exitCode, 0);
    const stamp = `${Date.now()}-${Math.random()}`;
    assert.equal((await roost(['exec', 'live', `echo ${stamp} > /root/stamp`])).exitCode, 0);
    const fork = await roost(['workspace', 'fork', 'live', 'live-copy']);
    assert.equal(fork.exitCode, 0, fork.stderr);
    assert.equal((await roost(['run', '-w', 'live-copy', 'cat /root/stamp'])).stdout, `${stamp}\n`);
    // Thawed after the capture: the sandbox answers at once.
    assert.equal((await roost(['exec', 'live', 'echo still here'])).stdout, 'still here\n');
    // Writes in the copy never change the original.
    assert.equal((await roost(['run', '-w', 'live-copy', 'echo changed > /root/stamp'])).exitCode, 0);
    assert.equal((await roost(['exec', 'live', 'cat /root/stamp'])).stdout, `${stamp}\n`);
    assert.equal((await roost(['rm', 'live'])).exitCode, 0);
  });
});
