// The Workspaces conformance suite against the fake and against the local btrfs pool (a real
// loop-mounted pool in a temp data dir).
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openLocalWorkspaces } from '@roost/workspaces-local';
import { FakeWorkspaces } from './fake-workspaces.js';
import { silentLogger } from './test-deps.js';
import { workspacesConformance } from './workspaces-conformance.js';

workspacesConformance({
  name: 'FakeWorkspaces',
  newWorkspaces: async () => {
    const workspaces = new FakeWorkspaces();
    return { workspaces, cleanup: async () => workspaces.dispose() };
  },
});

workspacesConformance({
  name: 'workspaces-local (btrfs)',
  newWorkspaces: async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'roost-ws-'));
    const workspaces = await openLocalWorkspaces({ dataDir, poolBytes: 1024 ** 3, keepSnapshots: 3, logger: silentLogger });
    return {
      workspaces,
      residue: async (id) => {
        const left: string[] = [];
        for (const p of [workspaces.workspaceDir(id), workspaces.snapshotsDir(id)]) if (existsSync(p)) left.push(p);
        return left;
      },
      cleanup: async () => {
        // close() unmounted the pool (nothing in use): no mount, and so no loop device, is left.
        const mounts = (await readFile('/proc/self/mounts', 'utf8')).split('\n').filter((l) => l.split(' ')[1]?.startsWith(dataDir));
        await rm(dataDir, { recursive: true, force: true });
        if (mounts.length) throw new Error(`mounts left under ${dataDir}: ${mounts.join('; ')}`);
      },
    };
  },
});
