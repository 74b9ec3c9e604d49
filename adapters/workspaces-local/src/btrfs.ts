// The btrfs commands the pool uses, each a short-lived child with bounded output. btrfs-progs
// 6.2's `--format json` aborts on qgroup sizes (an internal unit error), so sizes are read from
// the text table with --raw.
import { spawn } from 'node:child_process';

export interface CmdResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Output kept per stream: these commands print a line or a small table. */
const MAX_OUTPUT = 64 * 1024;

/** A btrfs command that takes longer is killed and fails (a stuck device must not hang roostd's calls). */
export const COMMAND_TIMEOUT_MS = 120_000;

export function runCmd(cmd: string, args: string[], timeoutMs = COMMAND_TIMEOUT_MS): Promise<CmdResult> {
  return new Promise((resolve) => {
    let child;
    try {
      child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs, killSignal: 'SIGKILL' });
    } catch (error) {
      resolve({ code: 127, stdout: '', stderr: (error as Error).message });
      return;
    }
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      if (stdout.length < MAX_OUTPUT) stdout += d.slice(0, MAX_OUTPUT - stdout.length);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < MAX_OUTPUT) stderr += d.slice(0, MAX_OUTPUT - stderr.length);
    });
    child.on('error', (error: NodeJS.ErrnoException) => resolve({ code: 127, stdout, stderr: `${cmd}: ${error.message}` }));
    child.on('close', (code, signal) => resolve({
      code: code ?? (signal ? 128 : 1),
      stdout,
      stderr: signal === 'SIGKILL' && code === null ? `${stderr}${cmd}: killed after ${timeoutMs} ms` : stderr,
    }));
  });
}

export async function mustRun(cmd: string, args: string[]): Promise<string> {
  const r = await runCmd(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr.trim() || `exit ${r.code}`}`);
  return r.stdout;
}

export const btrfs = (...args: string[]) => mustRun('btrfs', args);

export async function createSubvolume(path: string): Promise<void> {
  await btrfs('-q', 'subvolume', 'create', path);
}

/** A snapshot of `from` at `to`; read-only ones are what syncs upload from. */
export async function snapshotSubvolume(from: string, to: string, readOnly: boolean): Promise<void> {
  await btrfs('-q', 'subvolume', 'snapshot', ...(readOnly ? ['-r'] : []), from, to);
}

/** Deletes a subvolume; its space and qgroup go with the kernel's cleaner, in the background. */
export async function deleteSubvolume(path: string): Promise<void> {
  // A read-only snapshot's files cannot be unlinked, but the subvolume can be deleted as one.
  await btrfs('-q', 'subvolume', 'delete', path);
}

export async function isSubvolume(path: string): Promise<boolean> {
  return (await runCmd('btrfs', ['subvolume', 'show', path])).code === 0;
}

/** Exclusive-size limit of the subvolume at `path`; null lifts it. */
export async function setExclusiveLimit(path: string, bytes: number | null): Promise<void> {
  await btrfs('qgroup', 'limit', '-e', bytes === null ? 'none' : String(bytes), path);
}

export interface QgroupSizes {
  referencedBytes: number;
  exclusiveBytes: number;
  /** null: none. */
  exclusiveLimitBytes: number | null;
}

/**
 * The subvolume's own qgroup (0/<id>): what it references and what only it holds. `--sync`
 * commits the filesystem first, so writes made just before are counted.
 */
export async function qgroupSizes(path: string, opts: { sync?: boolean } = {}): Promise<QgroupSizes> {
  // -f lists only the qgroups of the path itself: its own 0/<subvolume id> is the one level-0 row.
  const table = await btrfs('qgroup', 'show', '-re', '--raw', '-f', ...(opts.sync === false ? [] : ['--sync']), path);
  return parseQgroupRow(table, /^0\/\d+$/, path);
}

/** The row of `qgroupId` in `btrfs qgroup show -re --raw` output. */
export function parseQgroupRow(table: string, qgroupId: RegExp, what: string): QgroupSizes {
  for (const line of table.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (!f[0] || !qgroupId.test(f[0])) continue;
    const num = (s: string | undefined) => (s === undefined || s === 'none' ? null : Number(s));
    const referenced = num(f[1]);
    const exclusive = num(f[2]);
    if (referenced === null || exclusive === null || Number.isNaN(referenced) || Number.isNaN(exclusive)) break;
    return { referencedBytes: referenced, exclusiveBytes: exclusive, exclusiveLimitBytes: num(f[4]) };
  }
  throw new Error(`no quota group for ${what} (are quotas enabled on the pool?)`);
}
