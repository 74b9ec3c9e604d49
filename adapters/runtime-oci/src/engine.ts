import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import type { Logger } from '@roost/core';
import { SHIFT_BASE } from './constants.js';
import { ociConfig } from './oci-config.js';
import { TOOLS_MOUNT } from './tools.js';
import { runCmd, runToFile, type RunResult } from './proc.js';

export type EngineName = 'crun' | 'runc';

/** A container engine bound to Roost's private state root. */
export interface Engine {
  name: EngineName;
  /** e.g. "crun 1.8.1" */
  version: string;
  bin: string;
  /** --root: a private state dir, so `list` sees only Roost's containers. */
  root: string;
  /** Whether cgroupfs can be mounted inside (probed). */
  mountCgroup: boolean;
  run(args: string[]): Promise<RunResult>;
  /** For `create`: the init inherits the engine's stdio, so stderr goes to a file. */
  runToFile(args: string[], logFile: string): Promise<RunResult>;
}

const HUGETLB = '/sys/fs/cgroup/hugetlb';

/** Looks in PATH and the sbin dirs (runc lives in /usr/sbin, often not in a daemon's PATH). */
async function which(bin: string): Promise<string | undefined> {
  const dirs = [...(process.env.PATH ?? '').split(':').filter(Boolean), '/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/bin', '/bin'];
  return dirs.map((d) => path.join(d, bin)).find((p) => existsSync(p));
}

function makeEngine(name: EngineName, bin: string, root: string, version: string): Engine {
  return { name, bin, root, version, mountCgroup: true, run: (args) => runCmd(bin, ['--root', root, ...args]),
    runToFile: (args, logFile) => runToFile(bin, ['--root', root, ...args], logFile),
  };
}

/**
 * Picks the engine: crun when it works (create ~10 ms vs runc ~30 ms), else runc.
 * The probe creates (and deletes) a real container with the same namespaces and cgroup
 * layout as a sandbox, because crun's hybrid-cgroup refusal only shows at create time.
 */
export async function probeEngine(
  stateDir: string,
  want: 'auto' | EngineName,
  toolsDir: string,
  log: Logger,
  cgroupParent?: string,
): Promise<Engine> {
  const root = path.join(stateDir, 'oci-state');
  await fs.mkdir(root, { recursive: true, mode: 0o700 });
  const tried: string[] = [];
  const order: EngineName[] = want === 'auto' ? ['crun', 'runc'] : [want];
  for (const name of order) {
    const bin = await which(name);
    if (!bin) {
      tried.push(`${name}: not installed (apt-get install -y ${name})`);
      continue;
    }
    const v = await runCmd(bin, ['--version']);
    const version = `${name} ${/version\s+([^\s]+)/.exec(v.stdout)?.[1] ?? '?'}`;
    const engine = makeEngine(name, bin, root, version);
    let err = await tryCreate(engine, stateDir, toolsDir, cgroupParent);
    if (err && name === 'crun' && /hybrid mode not supported/.test(err)) {
      // crun refuses a cgroup2 hierarchy that still has controllers. On these hosts that is
      // hugetlb, the one v1 controller nobody mounted; mounting it moves it off cgroup2.
      if (await mountHugetlb(log)) err = await tryCreate(engine, stateDir, toolsDir, cgroupParent);
    }
    if (err && /cgroup/.test(err)) {
      // Some engines cannot mount cgroupfs in a userns on a v1 host; sandboxes still work without it.
      engine.mountCgroup = false;
      const err2 = await tryCreate(engine, stateDir, toolsDir, cgroupParent);
      if (!err2) {
        log.warn({ engine: version, error: err }, 'cgroupfs will not be mounted inside sandboxes');
        err = undefined;
      }
    }
    if (!err) {
      log.info({ engine: version, root }, 'container engine selected');
      return engine;
    }
    tried.push(`${version}: ${err}`);
    log.warn({ engine: version, error: err }, 'container engine unusable');
  }
  throw new Error(`no usable container engine:\n  ${tried.join('\n  ')}`);
}

async function mountHugetlb(log: Logger): Promise<boolean> {
  const mounts = await fs.readFile('/proc/self/mounts', 'utf8');
  if (mounts.split('\n').some((l) => / cgroup .*\bhugetlb\b/.test(l))) return false;
  await fs.mkdir(HUGETLB, { recursive: true });
  const r = await runCmd('mount', ['-t', 'cgroup', '-o', 'hugetlb', 'cgroup', HUGETLB]);
  if (r.code !== 0) {
    log.warn({ error: r.stderr.trim() }, 'could not mount the hugetlb cgroup hierarchy');
    return false;
  }
  log.warn(
    { change: `mount -t cgroup -o hugetlb cgroup ${HUGETLB}`, undo: `umount ${HUGETLB}` },
    'host-global change: mounted the v1 hugetlb cgroup hierarchy so crun accepts this hybrid cgroup host',
  );
  return true;
}

/** Returns undefined when a throwaway container could be created, else the engine's error. */
async function tryCreate(engine: Engine, stateDir: string, toolsDir: string, cgroupParent?: string): Promise<string | undefined> {
  const id = `roost-probe-${process.pid}`;
  const bundle = path.join(stateDir, id);
  await fs.rm(bundle, { recursive: true, force: true });
  await fs.mkdir(path.join(bundle, 'rootfs'), { recursive: true });
  await fs.chown(path.join(bundle, 'rootfs'), SHIFT_BASE, SHIFT_BASE);
  const cfg = ociConfig(
    { id, hostname: id, image: '', env: {}, network: 'none', limits: { cpus: 1, memoryMb: 64, pids: 16, openFiles: 1024 } },
    { mountCgroup: engine.mountCgroup, toolsDir, cgroupParent },
  ) as { mounts: { destination: string }[] };
  // Only what needs no files in the rootfs: proc and tmpfs mounts, cgroupfs, the init and tools binds.
  cfg.mounts = cfg.mounts.filter((m) => ['/proc', '/dev', '/sys', '/sys/fs/cgroup', '/.roost/init', TOOLS_MOUNT].includes(m.destination));
  await fs.writeFile(path.join(bundle, 'config.json'), JSON.stringify(cfg));
  try {
    const r = await engine.runToFile(['create', '--bundle', bundle, id], path.join(bundle, 'create.log'));
    return r.code === 0 ? undefined : r.stderr.trim() || `exit ${r.code}`;
  } finally {
    await engine.run(['delete', '-f', id]);
    await fs.rm(bundle, { recursive: true, force: true });
  }
}
