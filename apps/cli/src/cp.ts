// `roost cp`: files into and out of a sandbox as tar streams, with docker cp's rules for trailing
// slashes and existing directories. Local archives are made and read by node-tar (the tar of
// npm itself), which keeps symlinks as symlinks and refuses entries that would land outside the
// destination; the sandbox side is its own tar, run by the daemon inside the sandbox.
import { lstat, mkdir, mkdtemp, readdir, realpath, rename, rm, stat, symlink, cp as copyTree } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { create as createTar, extract as extractTar } from 'tar';
import { sandboxNamePattern } from '@roost/contract/names';
import { client, withJson, type JsonOpt } from './connection.js';
import type { CliEnv } from './credentials.js';
import { formatBytes, printJson, UsageError } from './output.js';

/** `name:/path` (or `sb_…:/path`): a path in a sandbox; anything else is local ('-' is stdin/stdout). */
export type CpOperand = { kind: 'sandbox'; ref: string; path: string } | { kind: 'local'; path: string } | { kind: 'stdio' };

export function parseCpOperand(text: string): CpOperand {
  if (text === '-') return { kind: 'stdio' };
  const colon = text.indexOf(':');
  // A local path may hold ':' too; it is a sandbox only when what comes before is a name or id.
  if (colon > 0 && !text.slice(0, colon).includes('/')) {
    const ref = text.slice(0, colon);
    const path = text.slice(colon + 1);
    if (sandboxNamePattern.test(ref) || /^sb_[a-z0-9]{1,64}$/.test(ref)) {
      if (!path.startsWith('/')) throw new UsageError(`"${text}": a path inside a sandbox is absolute, as in ${ref}:/root/${path || 'file'}`);
      return { kind: 'sandbox', ref, path };
    }
  }
  return { kind: 'local', path: text };
}

interface CpOpts extends JsonOpt {
  recursive?: boolean;
  user?: string;
}

export function addCpCommand(program: Command, cli: CliEnv): void {
  withJson(
    program
      .command('cp')
      .description('copy files or directories into or out of a sandbox (name:/path), streamed as tar')
      .argument('<src>', 'local path, name:/path in a sandbox, or - (a tar stream on stdin)')
      .argument('<dst>', 'local path, name:/path in a sandbox, or - (a tar stream on stdout)')
      .option('-r, --recursive', 'accepted for scp habits: directories are always copied whole, as docker cp does')
      .option('--user <name>', "who writes (and owns) or reads the files in the sandbox (default: the sandbox's default user, as SSH logs in)")
      .addHelpText(
        'after',
        `
The rules of docker cp:
  a file to a path that is a directory   lands inside it (dir/<name>)
  a file to a path that does not exist   is created with that name (its parent must exist)
  a path ending in /                     must be an existing directory
  a directory to a missing path          is created as that path, with the directory's contents
  a directory to an existing directory   lands inside it (dir/<name>), merging with what is there
  SRC ending in /.                       copies the directory's contents into DST (made when missing)
Symlinks are copied as symlinks, never followed. Files copied in belong to the sandbox's default
user (--user to pick another); files copied out belong to you. A copy that fails or is cut off
leaves nothing half-written: it is extracted beside its destination and moved into place whole.
The daemon takes at most files.maxUploadBytes per copy in (UPLOAD_TOO_LARGE past it).

Examples:
  roost cp ./file dev:/tmp/
  roost cp -r ./dir dev:/srv/app
  roost cp dev:/etc/hostname .
  roost cp dev:/var/log ./logs
  tar -c src | roost cp - dev:/srv          # a tar stream, extracted into /srv
  roost cp dev:/srv - | tar -t              # a tar stream on stdout`,
      ),
  ).action(async (srcText: string, dstText: string, opts: CpOpts) => {
    const src = parseCpOperand(srcText);
    const dst = parseCpOperand(dstText);
    if ((src.kind === 'sandbox') === (dst.kind === 'sandbox')) {
      throw new UsageError(
        src.kind === 'sandbox'
          ? 'copy between two sandboxes through your machine: roost cp a:/path - | roost cp - b:/dir'
          : `name one side as a sandbox path (name:/path), as in roost cp ${srcText} dev:/tmp/`,
      );
    }
    const roost = await client(cli);
    const progress = new Progress(Boolean(process.stderr.isTTY) && !opts.json);
    const started = Date.now();
    let bytes: number;
    let local: string;
    let remote: { ref: string; path: string };
    if (dst.kind === 'sandbox') {
      remote = dst;
      local = src.kind === 'local' ? src.path : '-';
      const tar = src.kind === 'local' ? await localArchive(src.path) : (process.stdin as AsyncIterable<Uint8Array>);
      const contents = src.kind === 'local' && /\/\.$/.test(src.path);
      const result = await roost.putArchive(dst.ref, dst.path, progress.count(tar, 'sent'), {
        into: src.kind === 'stdio' || contents,
        create: contents,
        ...(opts.user && { user: opts.user }),
      });
      bytes = result.bytes;
    } else {
      remote = src as { ref: string; path: string };
      local = dst.kind === 'local' ? dst.path : '-';
      const tar = await roost.getArchive(remote.ref, remote.path, opts.user ? { user: opts.user } : {});
      const counted = progress.count(tar as unknown as AsyncIterable<Uint8Array>, 'received');
      if (dst.kind === 'stdio') await pipeline(Readable.from(counted), process.stdout);
      else await extractLocally(counted, remote.path, dst.path);
      bytes = progress.bytes;
    }
    progress.done();
    const seconds = (Date.now() - started) / 1000;
    const direction = dst.kind === 'sandbox' ? 'in' : 'out';
    if (opts.json) printJson({ direction, sandbox: remote.ref, path: remote.path, local, bytes, seconds });
    else if (process.stderr.isTTY && local !== '-') {
      process.stderr.write(`Copied ${formatBytes(bytes)} ${direction === 'in' ? `to ${remote.ref}:${remote.path}` : `to ${local}`} in ${seconds.toFixed(1)} s\n`);
    }
  });
}

/** A tar stream of a local path: one top entry (its name), or with "/." the directory's entries. */
async function localArchive(path: string): Promise<AsyncIterable<Uint8Array>> {
  const contents = /\/\.$/.test(path);
  const full = resolve(path);
  const info = await lstat(full).catch(() => {
    throw new UsageError(`no such local file or directory: ${path}`);
  });
  if (contents) {
    if (!info.isDirectory()) throw new UsageError(`${path}: "/." copies a directory's contents, and this is not a directory`);
    // "./" first: the directory's own mode, for a destination made from it.
    return createTar({ cwd: full, portable: true }, ['.']) as unknown as AsyncIterable<Uint8Array>;
  }
  return createTar({ cwd: dirname(full), portable: true }, [basename(full)]) as unknown as AsyncIterable<Uint8Array>;
}

/**
 * Extracts the sandbox's archive into a fresh directory beside the destination, then moves the
 * result into place (rename, or a merge into an existing directory) only once it is whole.
 */
async function extractLocally(tar: AsyncIterable<Uint8Array>, remotePath: string, dstText: string): Promise<void> {
  const dst = resolve(dstText);
  const contents = /\/\.$/.test(remotePath);
  const dstInfo = await stat(dst).catch(() => undefined);
  if (!dstInfo && (dstText.endsWith('/') || dstText.endsWith('/.'))) {
    const parent = await stat(dirname(dst)).catch(() => undefined);
    if (!parent?.isDirectory()) throw new UsageError(`no such local directory: ${dstText}`);
  }
  const workDir = dstInfo?.isDirectory() ? dst : dirname(dst);
  const workInfo = await stat(workDir).catch(() => undefined);
  if (!workInfo?.isDirectory()) throw new UsageError(`no such local directory: ${workDir}`);
  const tmp = await mkdtemp(join(workDir, '.roost-cp-'));
  const cleanUp = () => rmSync(tmp, { recursive: true, force: true });
  process.once('SIGINT', cleanUp);
  process.once('SIGTERM', cleanUp);
  try {
    // node-tar strips "/" from symlink targets and drops targets with "..": docker cp keeps them
    // as they are, so symlinks are made here, after everything else, each only in a real
    // directory under the temporary one (never through another symlink).
    const links: { path: string; target: string }[] = [];
    const filter = (path: string, entry: unknown) => {
      const { type, linkpath } = entry as { type?: string; linkpath?: string };
      if (type !== 'SymbolicLink') return true;
      links.push({ path, target: linkpath ?? '' });
      return false;
    };
    await pipeline(Readable.from(tar), extractTar({ cwd: tmp, filter }));
    await makeSymlinks(await realpath(tmp), links);
    if (contents) {
      if (!dstInfo) return await rename(tmp, dst);
      if (!dstInfo.isDirectory()) throw new UsageError(`cannot copy a directory's contents onto the file ${dstText}`);
      for (const name of await readdir(tmp)) await place(join(tmp, name), join(dst, name));
      return;
    }
    const entries = await readdir(tmp);
    if (entries.length !== 1) throw new Error(`the sandbox sent ${entries.length} top-level entries, expected 1`);
    const entry = join(tmp, entries[0]!);
    const entryIsDir = (await lstat(entry)).isDirectory();
    if (!dstInfo && dstText.endsWith('/') && !entryIsDir) throw new UsageError(`no such local directory: ${dstText}`);
    await place(entry, dstInfo?.isDirectory() ? join(dst, entries[0]!) : dst);
  } finally {
    process.off('SIGINT', cleanUp);
    process.off('SIGTERM', cleanUp);
    await rm(tmp, { recursive: true, force: true });
  }
}

async function makeSymlinks(root: string, links: { path: string; target: string }[]): Promise<void> {
  for (const link of links) {
    const parts = link.path.split('/').filter((part) => part !== '' && part !== '.');
    if (parts.length === 0 || parts.includes('..')) throw new Error(`the sandbox sent a symlink named "${link.path}", which would land outside the destination`);
    const path = join(root, ...parts);
    const parent = dirname(path);
    await mkdir(parent, { recursive: true });
    if ((await realpath(parent)) !== parent) throw new Error(`the sandbox sent a symlink "${link.path}" below another symlink`);
    await rm(path, { force: true });
    await symlink(link.target, path);
  }
}

/** Moves an extracted entry to its place: rename (whole at once), or merge a directory into one. */
async function place(entry: string, target: string): Promise<void> {
  const entryIsDir = (await lstat(entry)).isDirectory();
  const targetInfo = await lstat(target).catch(() => undefined);
  const targetIsDir = targetInfo ? (await stat(target).catch(() => targetInfo)).isDirectory() : false;
  if (entryIsDir && targetIsDir) {
    await copyTree(entry, target, { recursive: true, force: true, verbatimSymlinks: true, preserveTimestamps: true });
    return;
  }
  if (entryIsDir && targetInfo) throw new UsageError(`cannot overwrite the non-directory ${target} with a directory`);
  if (!entryIsDir && targetIsDir) throw new UsageError(`cannot overwrite the directory ${target} with a non-directory`);
  await rename(entry, target);
}

/** Bytes so far, shown on a terminal (stderr) at most 5 times a second; silent otherwise. */
class Progress {
  bytes = 0;
  private lastShown = 0;
  private readonly started = Date.now();
  private shown = false;

  constructor(private readonly visible: boolean) {}

  async *count(source: AsyncIterable<Uint8Array>, verb: string): AsyncGenerator<Uint8Array> {
    for await (const chunk of source) {
      this.bytes += chunk.length;
      const now = Date.now();
      if (this.visible && now - this.lastShown >= 200) {
        this.lastShown = now;
        this.shown = true;
        const rate = this.bytes / Math.max(0.001, (now - this.started) / 1000);
        process.stderr.write(`\r${formatBytes(this.bytes)} ${verb} (${formatBytes(rate)}/s)   `);
      }
      // node-tar parses Buffers; web streams give plain Uint8Arrays (a view, no copy).
      yield Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    }
  }

  done(): void {
    if (this.shown) process.stderr.write('\r\x1b[K');
  }
}

