// Workspaces synced to a real S3 server (s3rver), through roostd and the `roost` binary: what a
// user notices when the store is there, when it goes down while a sandbox runs and is stopped,
// and when the workspace opens on another machine (a fresh data dir with the daemon's database
// but none of its workspace files), which restores it from the store.
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli, startDaemon, startS3, type TestDaemon, type TestS3 } from '@roost/testkit';

interface StatusJson {
  status: string;
  workspace: { name: string; lastSyncedAt: string | null; failingSince: string | null; failure: string | null } | null;
}

describe('workspaces synced to S3, through roostd and the CLI', () => {
  let s3: TestS3;
  let first: TestDaemon | undefined;
  let second: TestDaemon | undefined;
  let secondDir: string | undefined;
  let storeConfig: { url: string; bucket: string; region: string; accessKeyId: string; secretAccessKey: string; forcePathStyle: boolean; prefix: string; maxAttempts: number };
  const cli = (daemon: TestDaemon) => (args: string[]) => runCli(args, { env: { ROOST_API_URL: daemon.url, ROOST_API_TOKEN: daemon.adminToken } });
  const status = async (roost: ReturnType<typeof cli>, name: string) => {
    const r = await roost(['status', name, '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    return JSON.parse(r.stdout) as StatusJson;
  };

  before(async () => {
    s3 = await startS3();
    // Two tries per request: an outage is told in seconds, not after the SDK's long backoff.
    storeConfig = {
      url: s3.url, bucket: s3.bucket, region: 'us-east-1', accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', forcePathStyle: true, prefix: '', maxAttempts: 2,
    };
    first = await startDaemon({ driver: 'oci', config: { workspaceStore: storeConfig } });
  });
  after(async () => {
    await second?.close().catch(() => {});
    if (secondDir) await rm(secondDir, { recursive: true, force: true });
    await first?.close().catch(() => {});
    await s3?.stop();
  });

  it('syncs on demand, keeps running through an outage, says a stop is not yet safe, and catches up', async () => {
    const roost = cli(first!);
    assert.equal((await roost(['new', 'dev'])).exitCode, 0);
    const write = await roost(['exec', 'dev', 'head -c 5000000 /dev/urandom > /root/data.bin && sha256sum /root/data.bin']);
    assert.equal(write.exitCode, 0, write.stderr);
    const sum = write.stdout.split(' ')[0];
    const synced = await roost(['sync', 'dev']);
    assert.equal(synced.exitCode, 0, synced.stderr);
    const afterSync = await status(roost, 'dev');
    assert.ok(afterSync.workspace?.lastSyncedAt, 'status shows when the store last took it');
    assert.equal(afterSync.workspace?.failingSince, null);

    // The store goes away: the sandbox keeps running, a sync says why it failed, status says since when.
    await s3.pause();
    assert.equal((await roost(['exec', 'dev', 'echo late > /root/late'])).exitCode, 0);
    const refused = await roost(['sync', 'dev']);
    assert.equal(refused.exitCode, 1, refused.stdout);
    assert.match(refused.stderr, /sync|store/i);
    assert.equal((await roost(['exec', 'dev', 'echo alive'])).stdout, 'alive\n');
    const failing = await status(roost, 'dev');
    assert.ok(failing.workspace?.failingSince, 'status shows the failing sync');
    assert.ok(failing.workspace?.failure);
    // A stop while it is down stops, keeps the local copy and says the workspace is not yet safe.
    const stop = await roost(['stop', 'dev']);
    assert.equal(stop.exitCode, 0, stop.stderr);
    assert.match(stop.stderr, /not yet safe in the store/);
    assert.equal((await status(roost, 'dev')).status, 'stopped');

    // Back: start finds every file (the local copy), and the next sync catches up.
    await s3.start();
    assert.equal((await roost(['start', 'dev'])).exitCode, 0);
    const back = await roost(['exec', 'dev', 'cat /root/late; sha256sum /root/data.bin']);
    assert.equal(back.stdout.split('\n')[0], 'late');
    assert.equal(back.stdout.split('\n')[1]?.split(' ')[0], sum);
    const caughtUp = await roost(['sync', 'dev']);
    assert.equal(caughtUp.exitCode, 0, caughtUp.stderr);
    assert.equal((await status(roost, 'dev')).workspace?.failingSince, null, 'a good sync clears the failure');
    const cleanStop = await roost(['stop', 'dev']);
    assert.equal(cleanStop.exitCode, 0, cleanStop.stderr);
    assert.doesNotMatch(cleanStop.stderr, /not yet safe/);

    // Another machine: the daemon's database, none of its workspace files. Start restores from the store.
    const oldData = first!.dataDir;
    await first!.stop();
    secondDir = await mkdtemp(join(tmpdir(), 'roost-test-'));
    await mkdir(join(secondDir, 'data'), { mode: 0o700 });
    for (const file of ['roost.db', 'roost.db-wal', 'admin-token']) {
      if (existsSync(join(oldData, file))) await copyFile(join(oldData, file), join(secondDir, 'data', file));
    }
    // The first daemon's data dir is cleaned by a daemon on it (it unmounts its pool).
    first = await startDaemon({ driver: 'oci', dataDir: oldData, config: { workspaceStore: storeConfig } });
    second = await startDaemon({ driver: 'oci', dataDir: join(secondDir, 'data'), config: { workspaceStore: storeConfig } });
    const elsewhere = cli(second);
    const started = await elsewhere(['start', 'dev']);
    assert.equal(started.exitCode, 0, started.stderr);
    const restored = await elsewhere(['exec', 'dev', 'cat /root/late; sha256sum /root/data.bin']);
    assert.equal(restored.stdout.split('\n')[0], 'late', restored.stderr);
    assert.equal(restored.stdout.split('\n')[1]?.split(' ')[0], sum, 'the file came back byte-identical');
  });
});
