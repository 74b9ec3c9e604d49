// Brings a fresh clone to a runnable state, skipping every step that is already done:
// Debian packages, npm packages, the in-sandbox tools, the TypeScript build, the default image.
// Used by `npm start` and `npm test`; plain Node with no dependencies, since it runs before `npm install`.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Debian packages the daemon and its tests need, by the command or file that shows each is there. */
const debianPackages = [
  { name: 'crun', present: '/usr/bin/crun' },
  { name: 'runc', present: '/usr/sbin/runc' },
  { name: 'catatonit', present: '/usr/bin/catatonit' },
  { name: 'mmdebstrap', present: '/usr/bin/mmdebstrap' },
  { name: 'iproute2', present: '/usr/sbin/ip' },
  { name: 'nftables', present: '/usr/sbin/nft' },
  { name: 'util-linux', present: '/usr/bin/prlimit' },
  { name: 'openssh-sftp-server', present: '/usr/lib/openssh/sftp-server' },
  // Views of /proc (free, top, uptime show the sandbox's limits); roostd starts its own lxcfs
  // when the host runs none (policy-rc.d below keeps the package's service from starting).
  { name: 'lxcfs', present: '/usr/bin/lxcfs' },
  // The tests' SSH clients: OpenSSH (ssh, scp, sftp), rsync, and paramiko standing in for IDEs.
  { name: 'openssh-client', present: '/usr/bin/ssh' },
  { name: 'rsync', present: '/usr/bin/rsync' },
  { name: 'python3-paramiko', present: '/usr/lib/python3/dist-packages/paramiko' },
  { name: 'python3', present: '/usr/bin/python3' },
  { name: 'make', present: '/usr/bin/make' },
  { name: 'g++', present: '/usr/bin/g++' },
  // The in-sandbox tools (adapters/runtime-oci/native): static C binaries and a patched sftp-server.
  { name: 'gcc', present: '/usr/bin/gcc' },
  { name: 'libc6-dev', present: '/usr/include/pty.h' },
  { name: 'patchelf', present: '/usr/bin/patchelf' },
  // Workspaces: the btrfs pool (mkfs.btrfs, subvolumes, snapshots, qgroup limits for --disk).
  { name: 'btrfs-progs', present: '/usr/sbin/mkfs.btrfs' },
  // Tests: a static busybox for an image that is not Debian.
  { name: 'busybox-static', present: '/bin/busybox' },
];

const isTty = process.stderr.isTTY;

export function step(message) {
  process.stderr.write(`${isTty ? '\x1b[1m==>\x1b[0m' : '==>'} ${message}\n`);
}

export function fail(message) {
  process.stderr.write(`\nsetup failed: ${message}\n`);
  process.exit(1);
}

function run(command, args, opts = {}) {
  const result = spawnSync(command, args, { stdio: 'inherit', cwd: repoRoot, ...opts });
  if (result.error) fail(`${command}: ${result.error.message}`);
  if (result.status !== 0) fail(`\`${command} ${args.join(' ')}\` exited with ${result.status}`);
}

/** Runs a long command showing one updating progress line on a TTY, plain lines otherwise. */
function runWithProgress(label, command, args, opts = {}) {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(command, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    const tail = [];
    let last = '';
    const show = () => {
      if (!isTty) return;
      const seconds = Math.round((Date.now() - started) / 1000);
      process.stderr.write(`\r\x1b[K    ${label}… ${seconds} s ${last.slice(0, 60)}`);
    };
    const timer = isTty ? setInterval(show, 500) : undefined;
    const onData = (chunk) => {
      for (const line of chunk.toString().split('\n').filter(Boolean)) {
        tail.push(line);
        if (tail.length > 40) tail.shift();
        last = line.trim();
        if (!isTty) process.stderr.write(`    ${line}\n`);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('close', (code) => {
      if (timer) clearInterval(timer);
      if (isTty) process.stderr.write(`\r\x1b[K`);
      if (code !== 0) fail(`${label} failed (exit ${code}):\n${tail.join('\n')}`);
      step(`${label}: done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      resolve();
    });
  });
}

export function ensureRoot(why) {
  if (process.getuid?.() !== 0) fail(`${why} needs root (namespaces, mounts, cgroups). Run it as root, e.g. sudo npm start.`);
}

export async function ensureDebianPackages(packages = debianPackages) {
  const missing = packages.filter((pkg) => !existsSync(pkg.present)).map((pkg) => pkg.name);
  if (missing.length === 0) return;
  step(`installing Debian packages: ${missing.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  // A package with a service (openssh-server, nginx) must not start it: without systemd its
  // postinst would run the init script and leave a daemon on a host port. policy-rc.d exit 101
  // is Debian's "do not start services" switch; ours is removed again right after.
  const policy = '/usr/sbin/policy-rc.d';
  const ownPolicy = !existsSync(policy);
  if (ownPolicy) writeFileSync(policy, '#!/bin/sh\n# written by Roost setup while installing packages\nexit 101\n', { mode: 0o755 });
  try {
    await runWithProgress('apt-get update', 'apt-get', ['update'], { env });
    await runWithProgress('apt-get install', 'apt-get', ['install', '-y', '--no-install-recommends', ...missing], { env });
  } finally {
    if (ownPolicy) rmSync(policy, { force: true });
  }
}

function newestMtime(path) {
  let newest = 0;
  for (const entry of readdirSync(path, { withFileTypes: true })) {
    // Build outputs (dist, the tools' build/) are not sources.
    if (['node_modules', 'dist', 'build'].includes(entry.name) || entry.name.startsWith('.')) continue;
    const full = join(path, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(full) : statSync(full).mtimeMs);
  }
  return newest;
}

export async function ensureNpmPackages() {
  const marker = join(repoRoot, 'node_modules', '.package-lock.json');
  const lock = join(repoRoot, 'package-lock.json');
  if (existsSync(marker) && existsSync(lock) && statSync(marker).mtimeMs >= statSync(lock).mtimeMs) return;
  step('installing npm packages (better-sqlite3 compiles from source the first time: ~1 min)');
  await runWithProgress('npm install', 'npm', ['install', '--no-audit', '--no-fund']);
}

export async function ensureBuild() {
  const stamp = join(repoRoot, 'apps', 'cli', 'dist', 'main.js');
  const sourcesChanged = !existsSync(stamp) || newestMtime(repoRoot) > statSync(stamp).mtimeMs;
  if (sourcesChanged) {
    step('building (tsc -b)');
    await runWithProgress('build', process.execPath, [join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '-b']);
  }
  for (const bin of ['apps/cli/dist/main.js', 'apps/roostd/dist/main.js']) chmodSync(join(repoRoot, bin), 0o755);
  // npm links workspace bins only when their targets exist; on a fresh clone they appear after the build.
  if (!existsSync(join(repoRoot, 'node_modules', '.bin', 'roost'))) run('npm', ['install', '--no-audit', '--no-fund', '--offline'], { stdio: 'ignore' });
}

/** The tools dir mounted at /.roost/tools in every sandbox: make runs when a source (or the
 *  host's sftp-server it copies) is newer than the last build, and rebuilds only what is stale. */
export async function ensureSandboxTools() {
  const nativeDir = join(repoRoot, 'adapters', 'runtime-oci', 'native');
  const stamp = join(nativeDir, 'build', '.stamp');
  const newestInput = Math.max(newestMtime(nativeDir), statSync('/usr/lib/openssh/sftp-server').mtimeMs);
  if (existsSync(stamp) && statSync(stamp).mtimeMs >= newestInput) return;
  step('building the in-sandbox tools (make -C adapters/runtime-oci/native)');
  await runWithProgress('in-sandbox tools', 'make', ['-C', nativeDir]);
  writeFileSync(stamp, `${new Date().toISOString()}\n`);
}

/** roostd's helper for the S3 workspace sync (xattrs, mknod, ns mtimes): make rebuilds it when
 *  its source is newer than the binary. */
export async function ensureWorkspaceTools() {
  const nativeDir = join(repoRoot, 'adapters', 'workspaces-s3', 'native');
  const binary = join(nativeDir, 'build', 'roost-fsmeta');
  if (existsSync(binary) && statSync(binary).mtimeMs >= newestMtime(nativeDir)) return;
  step('building the workspace sync helper (make -C adapters/workspaces-s3/native)');
  await runWithProgress('workspace sync helper', 'make', ['-C', nativeDir]);
}

export async function ensureDefaultImage() {
  run(process.execPath, [join(repoRoot, 'adapters', 'runtime-oci', 'dist', 'build-image.js')]);
}

export async function setup({ why }) {
  ensureRoot(why);
  await ensureDebianPackages();
  await ensureNpmPackages();
  await ensureSandboxTools();
  await ensureWorkspaceTools();
  await ensureBuild();
  await ensureDefaultImage();
}
