// The Workspaces conformance suite against openS3Workspaces around the local btrfs pool, with a
// real s3rver as the store: every sync and release goes through S3, restores come from there.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { openLocalWorkspaces } from '@roost/workspaces-local';
import { openS3Workspaces, s3ConfigFromEnv, SyncEngine } from '@roost/workspaces-s3';
import { startS3, type TestS3 } from './s3-server.js';
import { silentLogger } from './test-deps.js';
import { workspacesConformance } from './workspaces-conformance.js';

let s3: TestS3;
before(async () => {
  s3 = await startS3();
});
after(async () => {
  await s3?.stop();
});

workspacesConformance({
  name: 'workspaces-s3 around workspaces-local (btrfs + s3rver)',
  newWorkspaces: async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'roost-ws-s3c-'));
    const local = await openLocalWorkspaces({ dataDir, poolBytes: 1024 ** 3, keepSnapshots: 3, logger: silentLogger });
    const engine = new SyncEngine({
      store: s3ConfigFromEnv({ ...s3.env, ROOST_S3_PREFIX: dataDir.split('/').pop()! })!,
      cacheDir: join(dataDir, 's3-cache'),
      keepSnapshots: 3,
      logger: silentLogger,
    });
    const workspaces = openS3Workspaces({ local, s3: engine, stateDir: join(dataDir, 's3-state'), logger: silentLogger });
    return {
      workspaces,
      residue: async (id) => {
        const left: string[] = [];
        for (const p of [local.workspaceDir(id), local.snapshotsDir(id)]) if (existsSync(p)) left.push(p);
        if (await engine.head(id)) left.push(`store: workspaces/${id}/head.json`);
        for (const snapshot of await engine.snapshots(id)) left.push(`store: snapshot ${snapshot.id}`);
        return left;
      },
      cleanup: async () => {
        const mounts = (await readFile('/proc/self/mounts', 'utf8')).split('\n').filter((l) => l.split(' ')[1]?.startsWith(dataDir));
        await rm(dataDir, { recursive: true, force: true });
        if (mounts.length) throw new Error(`mounts left under ${dataDir}: ${mounts.join('; ')}`);
      },
    };
  },
});
