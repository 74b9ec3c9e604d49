// The btrfs pool that holds every workspace of one roostd: a preallocated file mounted through a
// loop device at <dataDir>/workspaces, or that directory itself when the data dir is btrfs
// already. See docs/workspaces.md ("The pool") and docs/operations.md.
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import type { Logger } from '@roost/core';
import { mustRun, runCmd } from './btrfs.js';

export interface PoolOpts {
  dataDir: string;
  /** Size of the pool file when one is made (the file is preallocated: it never runs out mid-write). */
  poolBytes: number;
  logger: Logger;
}

export interface Pool {
  /** Where the pool is mounted (or the btrfs dir used as one). */
  root: string;
  /** 'loop': our file on a loop device (unmounted when idle); 'native': a dir of a btrfs data dir. */
  kind: 'loop' | 'native';
  /** The pool file ('loop' only). */
  image?: string;
  /** What opening took, for the log and docs/workspaces.md. */
  timings: { createMs?: number; mountMs?: number };
}

export const POOL_DIR = 'workspaces';
export const POOL_IMAGE = 'workspaces.btrfs';
/** Smaller than this, mkfs.btrfs refuses (or metadata fills it at once). */
export const MIN_POOL_BYTES = 256 * 1024 * 1024;

interface MountEntry {
  target: string;
  fstype: string;
  source: string;
}

async function mountAt(target: string): Promise<MountEntry | undefined> {
  const info = await fs.readFile('/proc/self/mountinfo', 'utf8');
  let found: MountEntry | undefined;
  for (const line of info.split('\n')) {
    const [pre, post] = line.split(' - ');
    if (!pre || !post) continue;
    const f = pre.split(' ');
    if (f[4] !== target) continue;
    const [fstype, source] = post.split(' ');
    // The last one listed is the one on top.
    found = { target, fstype: fstype ?? '', source: source ?? '' };
  }
  return found;
}

async function fsTypeOf(dir: string): Promise<string> {
  return (await mustRun('stat', ['-f', '-c', '%T', dir])).trim();
}

/** Makes the pool ready: creates and formats its file the first time, mounts it, turns quotas on. */
export async function openPool(opts: PoolOpts): Promise<Pool> {
  const dataDir = path.resolve(opts.dataDir);
  const root = path.join(dataDir, POOL_DIR);
  const log = opts.logger;
  await fs.mkdir(dataDir, { recursive: true });
  const timings: Pool['timings'] = {};
  let pool: Pool;
  const mounted = await mountAt(root);
  if (mounted) {
    // A pool a previous roostd left mounted (its sandboxes still use it): adopt it.
    if (mounted.fstype !== 'btrfs') throw new Error(`${root} is a ${mounted.fstype} mount, not the btrfs workspace pool: unmount it (umount ${root})`);
    pool = { root, kind: 'loop', image: path.join(dataDir, POOL_IMAGE), timings };
  } else if ((await fsTypeOf(dataDir)) === 'btrfs' && !existsSync(path.join(dataDir, POOL_IMAGE))) {
    await fs.mkdir(root, { recursive: true, mode: 0o711 });
    pool = { root, kind: 'native', timings };
  } else {
    const image = path.join(dataDir, POOL_IMAGE);
    if (!existsSync(image)) {
      const t0 = performance.now();
      if (opts.poolBytes < MIN_POOL_BYTES) throw new Error(`workspaces.poolBytes ${opts.poolBytes} is below the minimum of ${MIN_POOL_BYTES}`);
      // Made under a temporary name and renamed when formatted, so a crash never leaves a
      // pool file that is not a filesystem.
      const tmp = `${image}.making`;
      await fs.rm(tmp, { force: true });
      try {
        await mustRun('fallocate', ['-l', String(opts.poolBytes), tmp]);
        await mustRun('mkfs.btrfs', ['-q', '-L', 'roost-workspaces', tmp]);
        await fs.rename(tmp, image);
      } catch (error) {
        await fs.rm(tmp, { force: true });
        throw new Error(`cannot make the workspace pool ${image}: ${(error as Error).message}`, { cause: error });
      }
      timings.createMs = +(performance.now() - t0).toFixed(1);
      log.info({ image, bytes: opts.poolBytes, ms: timings.createMs }, 'workspace pool file made');
    }
    await fs.mkdir(root, { recursive: true, mode: 0o711 });
    const t1 = performance.now();
    // util-linux sets autoclear on the loop device it makes: it goes with the last unmount.
    const r = await runCmd('mount', ['-o', 'loop', '-t', 'btrfs', image, root]);
    if (r.code !== 0) throw new Error(`cannot mount the workspace pool ${image} at ${root}: ${r.stderr.trim() || `exit ${r.code}`}`);
    timings.mountMs = +(performance.now() - t1).toFixed(1);
    const source = (await mountAt(root))?.source;
    log.warn({ image, root, loopDevice: source, ms: timings.mountMs }, 'host-global change: mounted the workspace pool on a loop device');
    pool = { root, kind: 'loop', image, timings };
  }
  try {
    await enableQuotas(pool, log);
  } catch (error) {
    if (pool.kind === 'loop' && !mounted) await closePool(pool, log).catch(() => {});
    throw error;
  }
  return pool;
}

async function enableQuotas(pool: Pool, log: Logger): Promise<void> {
  const r = await runCmd('btrfs', ['qgroup', 'show', pool.root]);
  if (r.code === 0) return;
  await mustRun('btrfs', ['quota', 'enable', pool.root]);
  log.warn({ root: pool.root }, pool.kind === 'native'
    ? 'host-global change: enabled btrfs quotas on the data dir\'s filesystem (workspace disk limits)'
    : 'host-global change: enabled btrfs quotas on the workspace pool');
}

/** Unmounts a loop pool (its loop device goes with it); a native one is left as it is. */
export async function closePool(pool: Pool, log: Logger): Promise<void> {
  if (pool.kind !== 'loop' || !(await mountAt(pool.root))) return;
  const r = await runCmd('umount', [pool.root]);
  if (r.code !== 0) throw new Error(`cannot unmount the workspace pool ${pool.root}: ${r.stderr.trim()}`);
  log.warn({ undone: `mount ${pool.root}` }, 'host-global change undone: workspace pool unmounted (no workspace in use)');
}

/** Why the pool cannot work here, each with its fix (doctor); empty when it can. */
export async function poolProblems(dataDir: string): Promise<Array<{ problem: string; fix: string }>> {
  const problems: Array<{ problem: string; fix: string }> = [];
  for (const bin of ['btrfs', 'mkfs.btrfs']) {
    if ((await runCmd('sh', ['-c', `command -v ${bin}`])).code !== 0) {
      problems.push({ problem: `${bin} is missing: workspaces cannot be made`, fix: 'apt-get install -y btrfs-progs' });
    }
  }
  const filesystems = await fs.readFile('/proc/filesystems', 'utf8').catch(() => '');
  if (!/\bbtrfs\b/.test(filesystems) && (await runCmd('modprobe', ['-n', 'btrfs'])).code !== 0) {
    problems.push({ problem: 'the kernel has no btrfs: the workspace pool cannot be mounted', fix: 'modprobe btrfs (or use a kernel built with CONFIG_BTRFS_FS)' });
  }
  const root = path.join(path.resolve(dataDir), POOL_DIR);
  const image = path.join(path.resolve(dataDir), POOL_IMAGE);
  if (existsSync(image)) {
    const mounted = await mountAt(root);
    if (mounted && mounted.fstype !== 'btrfs') {
      problems.push({ problem: `${root} is a ${mounted.fstype} mount, so the workspace pool cannot be mounted there`, fix: `umount ${root}, then restart roostd` });
    } else if (!mounted) {
      const r = await runCmd('btrfs', ['inspect-internal', 'dump-super', image]);
      if (r.code !== 0 || !/magic\s+_BHRfS_M \[match\]/.test(r.stdout)) {
        problems.push({
          problem: `the workspace pool file ${image} is not a btrfs filesystem (damaged?), so it cannot be mounted`,
          fix: `btrfs check ${image}; if it cannot be repaired, move it away (mv ${image} ${image}.broken) and restart roostd: a new empty pool is made (workspaces synced to S3 are restored from there)`,
        });
      }
    }
  }
  return problems;
}
