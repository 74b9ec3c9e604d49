// Starts a real roostd in this process on a free port with a temp data dir, for tests.
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildDaemon, loadConfig, type BuildDaemonOpts, type ConfigOverrides, type Daemon } from '@roost/roostd';
import { Roost } from '@roost/sdk';
import { FakeRuntime } from './fake-runtime.js';
import { FakeWorkspaces } from './fake-workspaces.js';

export interface StartDaemonOpts {
  /** 'oci' runs real sandboxes (root, the default image); 'fake' runs host processes. */
  driver: 'oci' | 'fake';
  /** Settings on top of the test defaults (which turn the warm pool off). */
  config?: ConfigOverrides;
  /** Start on the data dir of an earlier test daemon (after its `stop()`): it adopts that one's sandboxes. */
  dataDir?: string;
  /**
   * Workspaces: 'fake' is a FakeWorkspaces in the test's data dir (with driver 'fake': files
   * persist in its dirs), or the daemon's own `workspaces` option. Absent: none.
   */
  workspaces?: 'fake' | BuildDaemonOpts['workspaces'];
}

export interface TestDaemon {
  /** SDK client logged in as the admin user. */
  sdk: Roost;
  url: string;
  /** The SSH gateway's port on 127.0.0.1. */
  sshPort: number;
  adminToken: string;
  dataDir: string;
  /** JSON log lines of the daemon. */
  logFile: string;
  /** Makes another user and returns a token for it (for tenant tests). */
  createUserToken(name: string): Promise<string>;
  /** The daemon itself (its warm pool, config). */
  daemon: Daemon;
  /** Removes every sandbox, stops the daemon and deletes its data dir. */
  close(): Promise<void>;
  /** Stops the daemon like Ctrl-C: its sandboxes keep running; `startDaemon({ dataDir })` adopts them. */
  stop(): Promise<void>;
}

export async function startDaemon(opts: StartDaemonOpts): Promise<TestDaemon> {
  const dataDir = opts.dataDir ? dirname(opts.dataDir) : await mkdtemp(join(tmpdir(), 'roost-test-'));
  const logFile = join(dataDir, 'roostd.log');
  const logStream = createWriteStream(logFile, { flags: 'a' });
  const config = loadConfig(
    {},
    {
      dataDir: join(dataDir, 'data'),
      httpAddr: '127.0.0.1:0',
      sshAddr: '127.0.0.1:0',
      logLevel: 'debug',
      ...opts.config,
      pool: { size: 0, ...opts.config?.pool },
      // A test daemon's btrfs workspace pool (real driver): preallocated, so smaller than roostd's 20 GiB.
      workspaces: { poolBytes: 2 * 1024 ** 3, ...opts.config?.workspaces },
    },
  );
  let daemon;
  try {
    daemon = await buildDaemon(config, {
      runtime: opts.driver === 'fake' ? new FakeRuntime() : undefined,
      logDestination: logStream,
      workspaces: opts.workspaces === 'fake' ? new FakeWorkspaces({ dir: join(dataDir, 'fake-workspaces') }) : opts.workspaces,
    });
  } catch (error) {
    logStream.end();
    // An adopted data dir holds running sandboxes: never rm -r through their mounted roots.
    if (!opts.dataDir) await rm(dataDir, { recursive: true, force: true });
    throw error;
  }
  const { httpUrl, sshPort } = await daemon.listen();
  const adminToken = (await readFile(daemon.adminTokenFile, 'utf8')).trim();
  const sdk = new Roost({ apiUrl: httpUrl, token: adminToken });
  return {
    sdk,
    url: httpUrl,
    sshPort,
    adminToken,
    dataDir: config.dataDir,
    logFile,
    daemon,
    createUserToken: (name) => daemon.createUserWithToken(name),
    async stop() {
      await daemon.close();
      await new Promise((resolve) => logStream.end(resolve));
    },
    async close() {
      try {
        // A test's sandboxes, every user's, must not outlive it (the real daemon keeps them
        // across restarts); then the data dir can go.
        await daemon.removeAllSandboxes();
        await daemon.close();
      } finally {
        await new Promise((resolve) => logStream.end(resolve));
        // rm -r through a sandbox's still-mounted root would delete inside it: leave such a
        // data dir for inspection and say so.
        const mounts = await readFile('/proc/self/mounts', 'utf8');
        if (mounts.split('\n').some((line) => line.split(' ')[1]?.startsWith(`${dataDir}/`))) {
          throw new Error(`a sandbox of this test is still mounted under ${dataDir}: left in place (roost doctor lists it)`);
        }
        await rm(dataDir, { recursive: true, force: true });
      }
    },
  };
}
