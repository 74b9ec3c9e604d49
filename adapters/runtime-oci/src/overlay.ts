import { promises as fs } from 'node:fs';
import { mustRun, runCmd } from './proc.js';

export async function mountOverlay(lower: string, upper: string, work: string, target: string): Promise<void> {
  await mustRun('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${work}`, target]);
}

export async function isMountPoint(target: string): Promise<boolean> {
  const mounts = await fs.readFile('/proc/self/mountinfo', 'utf8');
  return mounts.split('\n').some((l) => l.split(' ')[4] === target);
}

/** Mounts at or under `dir` (deepest first), from mountinfo. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const mounts = await fs.readFile('/proc/self/mountinfo', 'utf8');
  return mounts
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m): m is string => !!m && (m === dir || m.startsWith(dir + '/')))
    .sort((a, b) => b.length - a.length);
}

/** Unmounts everything under `dir`; lazily when busy, so a stuck process cannot block destroy. */
export async function unmountAll(dir: string): Promise<void> {
  for (const m of await mountsUnder(dir)) {
    const r = await runCmd('umount', [m]);
    if (r.code !== 0) await mustRun('umount', ['-l', m]);
  }
}
