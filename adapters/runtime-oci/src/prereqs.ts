import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import type { HostProblem } from '@roost/core';
import { CATATONIT } from './constants.js';
import { buildToolsCommand, DEFAULT_TOOLS_DIR, missingTools } from './tools.js';

export type { HostProblem };

export interface HostProbeOpts {
  /** Where /proc is (tests point it at a made-up one). */
  procDir?: string;
  binDirs?: string[];
  catatonit?: string;
  uid?: number;
  /** The in-sandbox tools dir (default: this checkout's native/build/tools). */
  toolsDir?: string;
  /** The running kernel's modules dir (default /lib/modules/<release>). */
  modulesDir?: string;
}

/** Whether a module (e.g. kernel/fs/btrfs) is there to load: a dir or a .ko file under `modulesDir`. */
async function kernelHasModule(modulesDir: string | undefined, module: string): Promise<boolean> {
  const dir = modulesDir ?? path.join('/lib/modules', (await fs.readFile('/proc/sys/kernel/osrelease', 'utf8').catch(() => '')).trim());
  return existsSync(path.join(dir, module)) || existsSync(path.join(dir, `${module}.ko`));
}

/** What stops the OCI driver from working on this host, each with the command that fixes it. */
export async function checkHostPrerequisites(opts: HostProbeOpts = {}): Promise<HostProblem[]> {
  const procDir = opts.procDir ?? '/proc';
  const binDirs = opts.binDirs ?? ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
  const has = (bin: string) => binDirs.some((d) => existsSync(path.join(d, bin)));
  const problems: HostProblem[] = [];
  if ((opts.uid ?? process.getuid?.()) !== 0) {
    problems.push({ problem: 'roostd is not running as root (needed for mounts, cgroups and network namespaces)', fix: 'run it as root, e.g. sudo npm start' });
  }
  const maxUserNs = (await fs.readFile(path.join(procDir, 'sys/user/max_user_namespaces'), 'utf8').catch(() => '0')).trim();
  if (maxUserNs === '0') {
    problems.push({ problem: 'user namespaces are disabled (/proc/sys/user/max_user_namespaces is 0)', fix: 'sysctl -w user.max_user_namespaces=15000' });
  }
  const filesystems = await fs.readFile(path.join(procDir, 'filesystems'), 'utf8').catch(() => '');
  if (!/\boverlay\b/.test(filesystems)) {
    problems.push({ problem: 'the overlay filesystem is not available', fix: 'modprobe overlay' });
  }
  if (!has('crun') && !has('runc')) {
    problems.push({ problem: 'neither crun nor runc is installed', fix: 'apt-get install -y crun' });
  }
  const catatonit = opts.catatonit ?? CATATONIT;
  if (!existsSync(catatonit)) {
    problems.push({ problem: `catatonit (the sandboxes' init) is missing at ${catatonit}`, fix: 'apt-get install -y catatonit' });
  }
  const toolsDir = opts.toolsDir ?? DEFAULT_TOOLS_DIR;
  const missing = missingTools(toolsDir);
  if (missing.length) {
    problems.push({
      problem: `the in-sandbox tools (pty, port-forwarding relay, sftp-server) are not built: ${missing.join(', ')} missing in ${toolsDir}`,
      fix: buildToolsCommand(toolsDir),
    });
  }
  if (!has('ip')) problems.push({ problem: 'the ip command is missing', fix: 'apt-get install -y iproute2' });
  for (const bin of ['nsenter', 'prlimit']) {
    if (!has(bin)) problems.push({ problem: `the ${bin} command is missing`, fix: 'apt-get install -y util-linux' });
  }
  if (!has('nft')) problems.push({ problem: 'nft (the firewall of the sandbox bridge) is missing', fix: 'apt-get install -y nftables' });
  // Workspaces (adapters/workspaces-local): a btrfs pool with quotas for --disk.
  if (!has('btrfs') || !has('mkfs.btrfs')) {
    problems.push({ problem: 'btrfs-progs is missing: workspaces (files kept across runs, --disk, forks) cannot be made', fix: 'apt-get install -y btrfs-progs' });
  }
  if (!/\bbtrfs\b/.test(filesystems) && !(await kernelHasModule(opts.modulesDir, 'kernel/fs/btrfs'))) {
    problems.push({
      problem: 'the kernel has no btrfs: the workspace pool cannot be mounted',
      fix: 'modprobe btrfs (or boot a kernel built with CONFIG_BTRFS_FS)',
    });
  }
  if (!has('mmdebstrap')) {
    problems.push({ problem: 'mmdebstrap (builds the default image) is missing', fix: 'apt-get install -y mmdebstrap' });
  }
  return problems;
}
