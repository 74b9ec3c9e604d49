// LXCFS views: /proc/meminfo, cpuinfo, stat, uptime, … as the reading process's cgroup limits
// make them, bind-mounted over a sandbox's own files so `free`, `top` and `uptime` show the
// sandbox, not the host. See docs/runtime-oci.md, "Views of /proc (LXCFS)".
//
// roostd never reads the FUSE files itself: every look at them is a child process under
// `timeout -s KILL`, so an lxcfs that hangs cannot block the daemon's thread pool.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import type { HostProblem, Logger } from '@roost/core';
import { runCmd } from './proc.js';

/** The files lxcfs 5 virtualises that a sandbox mounts (relative to the lxcfs mount and to /). */
export const LXCFS_FILES = [
  'proc/cpuinfo', 'proc/diskstats', 'proc/loadavg', 'proc/meminfo', 'proc/stat', 'proc/swaps', 'proc/uptime',
  'sys/devices/system/cpu/online',
] as const;

export interface LxcfsOpts {
  /** 'auto' (default): the host's lxcfs at `hostDir` when it is mounted, else roostd's own; 'off': no views. */
  mode?: 'auto' | 'off';
  /** The lxcfs binary roostd starts when the host runs none (default /usr/bin/lxcfs). */
  binary?: string;
  /** Where a host's own lxcfs is mounted (Debian's service: /var/lib/lxcfs). */
  hostDir?: string;
}

/** What a sandbox made now mounts: `device` names this lxcfs mount (a new mount gets a new one). */
export interface LxcfsViews {
  dir: string;
  device: string;
  files: string[];
}

export const DEFAULT_LXCFS_BINARY = '/usr/bin/lxcfs';
export const DEFAULT_LXCFS_HOST_DIR = '/var/lib/lxcfs';
/** How long a successful or failed probe is trusted before the next create probes again. */
const PROBE_TTL_MS = 5_000;
/** A probe that takes longer means lxcfs hangs: treated as down. */
const PROBE_TIMEOUT_S = 3;
/** Own lxcfs: how long it may take to mount, and how often it is restarted after it died. */
const START_TIMEOUT_MS = 5_000;
const RESTART_INTERVAL_MS = 10_000;

interface MountEntry {
  device: string;
  fstype: string;
}

/** The topmost mount at exactly `dir`, from /proc/self/mountinfo (fields: id parent dev root point … - type source). */
export async function mountAt(dir: string, mountinfo = '/proc/self/mountinfo'): Promise<MountEntry | undefined> {
  const text = await fs.readFile(mountinfo, 'utf8');
  let found: MountEntry | undefined;
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    const point = fields[4]?.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (point !== dir) continue;
    const dash = fields.indexOf('-');
    found = { device: fields[2]!, fstype: dash > 0 ? fields[dash + 1] ?? '' : '' };
  }
  return found;
}

/**
 * Which of `files` lxcfs at `dir` serves, read through a child process with a deadline (a
 * read of uptime proves it answers). undefined: it does not answer (ENOTCONN of a dead FUSE
 * mount, or a hang).
 */
async function probe(dir: string): Promise<string[] | undefined> {
  const script = 'cd "$1" && shift && head -c 64 proc/uptime >/dev/null && for f; do [ -e "$f" ] && echo "$f"; done; true';
  const r = await runCmd('timeout', ['-s', 'KILL', String(PROBE_TIMEOUT_S), 'sh', '-c', script, 'sh', dir, ...LXCFS_FILES]).catch(() => undefined);
  if (!r || r.code !== 0) return undefined;
  const served = new Set(r.stdout.split('\n'));
  // A view only where the sandbox has the file to mount it over (the host's sysfs may lack cpu/online).
  return LXCFS_FILES.filter((f) => served.has(f) && existsSync(`/${f}`));
}

type State =
  | { kind: 'off' }
  | { kind: 'missing'; why: string }
  | { kind: 'host'; dir: string }
  | { kind: 'own'; dir: string; pid?: number; failed?: string };

/**
 * The lxcfs sandboxes' views come from: the host's (never started or stopped by roostd) or
 * roostd's own on `<stateDir>/lxcfs`, started at open and stopped by `close` when no sandbox
 * is left (running sandboxes' views need it; the next start reattaches to it).
 */
export class Lxcfs {
  private state: State;
  private child?: ChildProcess;
  private cached?: { at: number; views: LxcfsViews | undefined };
  private refreshing?: Promise<void>;
  private restarting?: Promise<void>;
  /** When a start of our own lxcfs last failed: retried at most every RESTART_INTERVAL_MS. */
  private lastFailedStart = 0;
  private readonly ownDir: string;
  private readonly pidFile: string;
  private readonly logFile: string;

  private constructor(stateDir: string, private readonly opts: Required<LxcfsOpts>, private readonly log: Logger) {
    this.ownDir = path.join(stateDir, 'lxcfs');
    this.pidFile = path.join(stateDir, 'lxcfs.pid');
    this.logFile = path.join(stateDir, 'lxcfs.log');
    this.state = { kind: 'off' };
  }

  static async open(stateDir: string, opts: LxcfsOpts, log: Logger): Promise<Lxcfs> {
    const full: Required<LxcfsOpts> = {
      mode: opts.mode ?? 'auto',
      binary: opts.binary ?? DEFAULT_LXCFS_BINARY,
      hostDir: opts.hostDir ?? DEFAULT_LXCFS_HOST_DIR,
    };
    const lxcfs = new Lxcfs(stateDir, full, log);
    await lxcfs.choose();
    // The first probe now, so no create waits for one.
    await lxcfs.refresh();
    return lxcfs;
  }

  /** The host's lxcfs, else an own one (reattached or started), else none, and why. */
  private async choose(): Promise<void> {
    const full = this.opts;
    const log = this.log;
    if (full.mode === 'off') return;
    const host = await mountAt(full.hostDir).catch(() => undefined);
    if (host?.fstype === 'fuse.lxcfs' && (await probe(full.hostDir))) {
      this.state = { kind: 'host', dir: full.hostDir };
      log.info({ dir: full.hostDir }, "lxcfs: using the host's mount for sandboxes' /proc views");
      return;
    }
    if (!existsSync(full.binary)) {
      const why = `lxcfs is not installed (no ${full.binary}) and ${full.hostDir} is not an lxcfs mount`;
      this.state = { kind: 'missing', why };
      // A leftover of our own from when it was installed still gets cleaned up.
      await this.removeStaleOwn();
      log.warn({ binary: full.binary, hostDir: full.hostDir }, `${why}: sandboxes see the host's memory, CPUs and uptime in /proc`);
      return;
    }
    this.state = { kind: 'own', dir: this.ownDir };
    if (!(await this.reattach())) await this.startOwn();
  }

  /**
   * The views a sandbox made now mounts, or undefined while lxcfs is off or not answering
   * (the sandbox then shows the host's /proc). Never waits for a probe (~5-30 ms of child
   * processes): it uses the last one and starts the next in the background when that is older
   * than PROBE_TTL_MS. An own lxcfs that died is seen at once and restarted here.
   */
  async views(): Promise<LxcfsViews | undefined> {
    const s = this.state;
    if (s.kind === 'off' || s.kind === 'missing') return undefined;
    if (s.kind === 'own' && !this.ownAlive()) {
      if (Date.now() - this.lastFailedStart < RESTART_INTERVAL_MS) return undefined;
      // Creates run side by side: one restart for all of them.
      this.restarting ??= this.restartOwn(s.pid).finally(() => (this.restarting = undefined));
      await this.restarting;
    } else if (!this.cached) {
      await this.refresh();
    } else if (Date.now() - this.cached.at > PROBE_TTL_MS) {
      void this.refresh();
    }
    return this.cached?.views;
  }

  private async restartOwn(pid: number | undefined): Promise<void> {
    if (pid !== undefined) this.log.error({ pid, dir: this.ownDir }, 'lxcfs died: restarting it (sandboxes made before see ENOTCONN on their /proc views until re-created)');
    await this.refreshing;
    this.cached = undefined;
    await this.removeStaleOwn();
    await this.startOwn();
    await this.refresh();
  }

  /** Probes the mount (one probe at a time); never throws. */
  private refresh(): Promise<void> {
    this.refreshing ??= this.probeNow()
      .catch(() => undefined)
      .then((views) => {
        const s = this.state;
        if (!views && this.cached?.views && s.kind !== 'off' && s.kind !== 'missing') {
          this.log.error({ dir: s.dir }, "lxcfs does not answer: new sandboxes get the host's /proc until it is back (roost doctor)");
        }
        this.cached = { at: Date.now(), views };
      })
      .finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  private async probeNow(): Promise<LxcfsViews | undefined> {
    const s = this.state;
    if (s.kind === 'off' || s.kind === 'missing' || (s.kind === 'own' && s.pid === undefined)) return undefined;
    const [files, mount] = await Promise.all([probe(s.dir), mountAt(s.dir).catch(() => undefined)]);
    return files?.length && mount?.fstype === 'fuse.lxcfs' ? { dir: s.dir, device: mount.device, files } : undefined;
  }

  /** For doctor: why sandboxes get no views now (undefined: they do, or lxcfs is turned off). */
  async problem(): Promise<HostProblem | undefined> {
    const effect = "free, top, uptime and /proc/cpuinfo in sandboxes show the host's memory, CPUs and uptime";
    if (this.state.kind === 'off') return undefined;
    if (this.state.kind === 'missing') return { problem: `${this.state.why}: ${effect}`, fix: 'apt-get install -y lxcfs, then restart roostd' };
    // A fresh look, not the cached one: restarts an own lxcfs that died, probes the mount.
    if (await this.views()) {
      await this.refresh();
      if (this.cached?.views) return undefined;
    }
    const s = this.state;
    if (s.kind === 'host') {
      return {
        problem: `the host's lxcfs at ${s.dir} does not answer (dead or hung FUSE mount): ${effect} for new sandboxes`,
        fix: `restart the host's lxcfs (e.g. fusermount -u ${s.dir}; lxcfs ${s.dir}), or unmount ${s.dir} and restart roostd to use its own`,
      };
    }
    if (s.kind !== 'own') return undefined;
    return {
      problem: `roostd's lxcfs at ${s.dir} ${s.pid === undefined ? `did not start${s.failed ? ` (${s.failed})` : ''}` : `(pid ${s.pid}) does not answer`}: ${effect} for new sandboxes`,
      fix: `see ${this.logFile}; roostd retries at the next create, or restart roostd`,
    };
  }

  /**
   * Stops an own lxcfs and unmounts it, but only when `idle` (no sandbox left): running
   * sandboxes' views are bind mounts of its files and would turn to ENOTCONN.
   */
  async close(idle: boolean): Promise<void> {
    await this.refreshing;
    const s = this.state;
    if (s.kind !== 'own' || s.pid === undefined) return;
    if (!idle) {
      this.log.info({ pid: s.pid, dir: s.dir }, 'lxcfs keeps running for the sandboxes that outlive roostd; the next start reattaches to it');
      return;
    }
    await this.stopOwn(s.pid);
    this.log.warn({ undone: `lxcfs ${s.dir} (pid ${s.pid})` }, 'host-global change undone: lxcfs stopped and unmounted (no sandbox left)');
  }

  private ownAlive(): boolean {
    const s = this.state;
    if (s.kind !== 'own' || s.pid === undefined) return false;
    if (this.child) return this.child.exitCode === null && this.child.signalCode === null;
    return isLxcfsProcess(s.pid, s.dir);
  }

  /** An lxcfs of an earlier roostd on this state dir, still mounted and answering. */
  private async reattach(): Promise<boolean> {
    const pid = Number((await fs.readFile(this.pidFile, 'utf8').catch(() => '')).trim());
    if (!(pid > 0) || !isLxcfsProcess(pid, this.ownDir)) {
      await this.removeStaleOwn();
      return false;
    }
    const mount = await mountAt(this.ownDir);
    if (mount?.fstype !== 'fuse.lxcfs' || !(await probe(this.ownDir))) {
      await this.removeStaleOwn(pid);
      return false;
    }
    this.state = { kind: 'own', dir: this.ownDir, pid };
    this.log.info({ pid, dir: this.ownDir }, 'lxcfs: reattached to the one a previous roostd started');
    return true;
  }

  /**
   * Kills an earlier lxcfs of ours and unmounts its mount point: a FUSE mount whose daemon died
   * answers ENOTCONN to everything, so it is detached lazily (a sandbox's bind mounts of its
   * files are mounts of their own and stay, dead, until those sandboxes go).
   */
  private async removeStaleOwn(pid?: number): Promise<void> {
    if (pid !== undefined) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    const mount = await mountAt(this.ownDir).catch(() => undefined);
    if (mount) {
      const r = await runCmd('umount', ['-l', this.ownDir]);
      if (r.code === 0) this.log.warn({ undone: `mount ${this.ownDir}` }, 'host-global change undone: removed a dead lxcfs mount (ENOTCONN) left by an earlier lxcfs');
      else this.log.error({ dir: this.ownDir, error: r.stderr.trim() }, 'cannot remove a dead lxcfs mount');
    }
    await fs.rm(this.pidFile, { force: true });
  }

  private async startOwn(): Promise<void> {
    const dir = this.ownDir;
    await fs.mkdir(dir, { recursive: true, mode: 0o755 });
    // --enable-cfs: cpuinfo, stat and cpu/online count the CPUs of the cgroup's CFS quota (--cpus);
    // --enable-loadavg: loadavg of the sandbox's own tasks (a thread walks the cgroups every second).
    const args = ['--foreground', '--enable-cfs', '--enable-loadavg', '--pidfile', this.pidFile, dir];
    const logFd = openSync(this.logFile, 'a');
    let child: ChildProcess;
    try {
      // Its own process group: Ctrl-C of roostd must not kill it under running sandboxes.
      child = spawn(this.opts.binary, args, { detached: true, stdio: ['ignore', logFd, logFd] });
    } finally {
      closeSync(logFd);
    }
    child.on('error', () => {});
    // Never what keeps roostd (or a test) alive; its exit event still arrives while roostd runs.
    child.unref();
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const deadline = Date.now() + START_TIMEOUT_MS;
    let mounted = false;
    while (!mounted && Date.now() < deadline && child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      mounted = (await mountAt(dir).catch(() => undefined))?.fstype === 'fuse.lxcfs';
      if (!mounted) await Promise.race([exited, new Promise((r) => setTimeout(r, 20))]);
    }
    if (!mounted) {
      if (child.pid !== undefined && child.exitCode === null) child.kill('SIGKILL');
      const tail = (await fs.readFile(this.logFile, 'utf8').catch(() => '')).trim().split('\n').slice(-1)[0] ?? '';
      const failed = `it did not mount ${dir}${tail ? `: ${tail.slice(0, 200)}` : ''}`;
      this.state = { kind: 'own', dir, failed };
      this.lastFailedStart = Date.now();
      this.log.error({ binary: this.opts.binary, dir, log: this.logFile, failed }, "lxcfs did not start: sandboxes see the host's /proc (roost doctor)");
      return;
    }
    this.child = child;
    this.state = { kind: 'own', dir, pid: child.pid! };
    this.log.warn(
      { change: `${this.opts.binary} ${args.join(' ')} (FUSE mount ${dir}, pid ${child.pid})`, undo: `kill ${child.pid}; umount -l ${dir}` },
      "host-global change: started lxcfs for sandboxes' /proc views",
    );
  }

  private async stopOwn(pid: number): Promise<void> {
    const exited = this.child && this.child.exitCode === null ? new Promise<void>((r) => this.child!.once('exit', () => r())) : undefined;
    // umount first: lxcfs then has nothing to serve and exits on SIGTERM without a dangling mount.
    const r = await runCmd('umount', [this.ownDir]);
    if (r.code !== 0 && (await mountAt(this.ownDir).catch(() => undefined))) await runCmd('umount', ['-l', this.ownDir]);
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // gone already
    }
    if (exited) await Promise.race([exited, new Promise((res) => setTimeout(res, 2_000))]);
    else for (let i = 0; i < 100 && isLxcfsProcess(pid, this.ownDir); i++) await new Promise((res) => setTimeout(res, 20));
    if (isLxcfsProcess(pid, this.ownDir)) process.kill(pid, 'SIGKILL');
    await fs.rm(this.pidFile, { force: true });
    await fs.rmdir(this.ownDir).catch(() => {});
    this.state = { kind: 'own', dir: this.ownDir };
    this.child = undefined;
  }
}

/** Whether `pid` is an lxcfs serving `dir` (a pid file can outlive its process and the pid be reused). */
function isLxcfsProcess(pid: number, dir: string): boolean {
  try {
    // /proc of a pid, never the FUSE mount: cannot hang.
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    return path.basename(argv[0] ?? '') === 'lxcfs' && argv.includes(dir);
  } catch {
    return false;
  }
}
