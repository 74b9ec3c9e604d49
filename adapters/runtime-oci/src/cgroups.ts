import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';

const ROOT = '/sys/fs/cgroup';

/**
 * The sandbox's cgroup dirs in every hierarchy (v1 controllers, the unified one, or pure v2),
 * under `parent`, the instance's cgroup parent.
 */
export async function cgroupDirs(parent: string, id: string): Promise<string[]> {
  const candidates = [path.join(ROOT, parent, id)];
  for (const h of await fs.readdir(ROOT).catch(() => [] as string[])) {
    candidates.push(path.join(ROOT, h, parent, id));
  }
  return candidates.filter((p) => existsSync(p));
}

/**
 * The engine removes these on delete; this catches what a failed create or a crash left.
 * Processes still inside (their engine state lost) are killed first: they are the sandbox's.
 */
export async function removeCgroups(parent: string, id: string): Promise<void> {
  const dirs = await cgroupDirs(parent, id);
  for (const dir of dirs) {
    const procs = await fs.readFile(path.join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
    for (const pid of procs.split('\n').map(Number).filter((n) => n > 0)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  for (const dir of dirs) {
    for (let i = 0; ; i++) {
      try {
        await fs.rmdir(dir);
        break;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') break;
        // EBUSY while the last killed tasks are still exiting.
        if (i >= 50) throw new Error(`cannot remove cgroup ${dir}: ${code}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }
}

/**
 * OOM kills in the sandbox's memory cgroup: `oom_kill` of memory.oom_control (v1) or
 * memory.events (v2). 0 when neither is readable.
 */
export async function oomKillCount(parent: string, id: string): Promise<number> {
  for (const dir of await cgroupDirs(parent, id)) {
    for (const file of ['memory.oom_control', 'memory.events']) {
      const text = await fs.readFile(path.join(dir, file), 'utf8').catch(() => undefined);
      const match = text && /^oom_kill (\d+)$/m.exec(text);
      if (match) return Number(match[1]);
    }
  }
  return 0;
}
