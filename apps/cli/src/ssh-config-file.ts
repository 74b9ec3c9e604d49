// The block `roost ssh-config --write` keeps in ~/.ssh/config: one, between markers, replaced in
// place on every run; every byte outside it stays as the user wrote it. Users of tools that pile
// up or duplicate managed blocks end up with competing entries (coder/coder#13272), so any
// number of old blocks collapse into the one new block.
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, realpath, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export const blockBegin = '# --- BEGIN roost ssh-config';
export const blockEnd = '# --- END roost ssh-config ---';
/** What `roost ssh-config >> ~/.ssh/config` of earlier versions left (not a managed block). */
const legacyHeader = /^# Roost sandboxes on .* \(roost ssh-config\)$/m;

/**
 * `text` with `block` in place of the managed block(s), or, without one, `block` first: ssh
 * takes the first value it finds for an option, so a `Host *` further down (with its own
 * UserKnownHostsFile or ProxyJump) cannot override the block's. The block ends in `Host *`, so
 * options the user wrote above any `Host` line still apply to every host.
 */
export function withManagedBlock(text: string, block: string): string {
  const lines = text.split(/(?<=\n)/);
  const kept: string[] = [];
  let at = -1;
  let inside = false;
  for (const line of lines) {
    const bare = line.replace(/\r?\n$/, '');
    if (!inside && bare.startsWith(blockBegin)) {
      inside = true;
      if (at === -1) at = kept.length;
      continue;
    }
    if (inside) {
      if (bare === blockEnd) inside = false;
      continue;
    }
    kept.push(line);
  }
  // A BEGIN without its END: which lines after it are the user's is anybody's guess.
  if (inside) throw new Error(`the block of roost ssh-config in your ssh config has no "${blockEnd}" line: delete the block by hand, then run this again`);
  const ours = block.endsWith('\n') ? block : `${block}\n`;
  if (at === -1) return ours + (text && !text.startsWith('\n') ? '\n' : '') + text;
  kept.splice(at, 0, ours);
  return kept.join('');
}

/** Whether the file still holds entries that an older `roost ssh-config >>` appended. */
export function hasLegacyEntries(text: string): boolean {
  return legacyHeader.test(text);
}

/**
 * Writes `file` with the block, atomically (a temp file beside it, then rename: an editor or
 * ssh reading at the same time sees the old file or the new one). A symlinked config (dotfile
 * managers) is written where the link points; the mode is kept, 0600 for a new file, and
 * ~/.ssh is made 0700 when missing. Returns whether anything changed.
 */
export async function writeManagedBlock(file: string, block: string): Promise<{ changed: boolean; legacy: boolean }> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  const target = await realpath(file).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return file;
    throw error;
  });
  const existing = await readFile(target, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  const next = withManagedBlock(existing ?? '', block);
  const legacy = hasLegacyEntries(next);
  if (next === existing) return { changed: false, legacy };
  const mode = existing === undefined ? 0o600 : (await stat(target)).mode & 0o7777;
  const temp = join(dirname(target), `.${basename(target)}.roost-${randomBytes(6).toString('hex')}`);
  const handle = await open(temp, 'wx', mode);
  try {
    await handle.writeFile(next);
    await handle.chmod(mode);
    await handle.sync();
  } catch (error) {
    await handle.close();
    await rm(temp, { force: true });
    throw error;
  }
  await handle.close();
  await rename(temp, target).catch(async (error: unknown) => {
    await rm(temp, { force: true });
    throw error;
  });
  return { changed: true, legacy };
}
