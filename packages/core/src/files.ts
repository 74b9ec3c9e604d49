// Files in and out of a sandbox as tar streams. The daemon never touches the sandbox's files
// itself: it runs the sandbox's own `sh` and `tar` INSIDE the sandbox, as a user of the sandbox,
// with the stream on stdin or stdout. A symlink in the sandbox pointing at / therefore points at
// the sandbox's own /, `..` in an archive is the sandbox's tar's business, and nothing the
// archive or the sandbox holds can make roostd write on the host.
//
// Copy-in extracts into a fresh directory beside the destination and moves the result into place
// only once the whole archive was read and tar succeeded: an upload that is cut off, too large or
// refused leaves no file that looks complete (a file lands by rename(2); a directory that merges
// into an existing one is copied in by `cp -a` after the extraction succeeded).
import type { Writable } from 'node:stream';
import { RoostError } from './errors.js';
import type { OutputChunk } from './output.js';
import type { SandboxService } from './sandbox-service.js';

export interface SandboxPath {
  /** Absolute, "." and ".." resolved lexically (never above /), no trailing slash except "/". */
  path: string;
  /** The caller wrote a trailing slash: it means "an existing directory" (docker cp). */
  trailingSlash: boolean;
  /** The caller wrote ".../." : the directory's contents rather than the directory (docker cp). */
  contents: boolean;
}

export const maxSandboxPathBytes = 4096;

/** Checks and normalises a path inside a sandbox; INVALID_PATH when it is not absolute or holds NUL. */
export function normaliseSandboxPath(raw: string): SandboxPath {
  if (raw.includes('\0')) throw new RoostError('INVALID_PATH', 'a path inside a sandbox cannot hold a NUL byte');
  if (!raw.startsWith('/')) throw new RoostError('INVALID_PATH', `"${raw}" is not absolute: a path inside a sandbox starts with /`);
  if (new TextEncoder().encode(raw).length > maxSandboxPathBytes) {
    throw new RoostError('INVALID_PATH', `a path inside a sandbox is at most ${maxSandboxPathBytes} bytes`);
  }
  const parts: string[] = [];
  for (const part of raw.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') parts.pop();
    else parts.push(part);
  }
  const path = `/${parts.join('/')}`;
  return { path, trailingSlash: raw.length > 1 && raw.endsWith('/'), contents: raw.endsWith('/.') };
}

// Exit codes the scripts use to say what went wrong before or after tar.
const exitNoTar = 90;
const exitNotFound = 91;
const exitRefused = 92;

/**
 * $1 destination as the user wrote it (normalised, "/" kept at the end when they wrote one),
 * $2 temporary directory name, $3 "1": extract every entry into $1 (an existing directory);
 * "2": the same, but a missing $1 is created (its parent must exist) from the archive's "./".
 * POSIX sh with GNU tar / coreutils flags (the default image's); another tar says so in stderr.
 */
const copyInScript = `
set -u
command -v tar >/dev/null 2>&1 || { echo "this image has no tar" >&2; exit ${exitNoTar}; }
dst=$1; tmpname=$2; into=$3
if [ -d "$dst" ]; then
  base=$dst
  [ "$into" = 2 ] && into=1
else
  case $dst in */) echo "no such directory in the sandbox: $dst" >&2; exit ${exitNotFound};; esac
  [ "$into" = 1 ] && { echo "no such directory in the sandbox: $dst" >&2; exit ${exitNotFound}; }
  base=$(dirname -- "$dst")
  [ -d "$base" ] || { echo "no such directory in the sandbox: $base" >&2; exit ${exitNotFound}; }
fi
tmp=$base/$tmpname
mkdir -m 700 -- "$tmp" || exit ${exitRefused}
trap 'rm -rf -- "$tmp"' EXIT
tar -x -p --no-same-owner -f - -C "$tmp" || exit ${exitRefused}
place() {
  if [ -d "$1" ] && [ ! -L "$1" ]; then
    if [ -d "$2" ]; then cp -a -- "$1/." "$2/" || exit ${exitRefused}; return; fi
    if [ -e "$2" ] || [ -L "$2" ]; then echo "cannot overwrite non-directory $2 with a directory" >&2; exit ${exitRefused}; fi
  elif [ -d "$2" ] && [ ! -L "$2" ]; then
    echo "cannot overwrite directory $2 with a non-directory" >&2; exit ${exitRefused}
  fi
  mv -f -T -- "$1" "$2" || exit ${exitRefused}
}
if [ "$into" = 2 ]; then
  # A directory's contents to a new path: the extracted directory becomes it, in one rename.
  mv -T -- "$tmp" "$dst" || exit ${exitRefused}
  exit 0
fi
set -- "$tmp"/* "$tmp"/.[!.]* "$tmp"/..?*
if [ "$into" = 1 ]; then
  for e do [ -e "$e" ] || [ -L "$e" ] || continue; place "$e" "$dst/\${e##*/}"; done
  exit 0
fi
n=0; src=
for e do [ -e "$e" ] || [ -L "$e" ] || continue; n=$((n+1)); src=$e; done
[ "$n" = 1 ] || { echo "the archive must hold exactly one top-level entry (it holds $n); use into=true for several" >&2; exit ${exitRefused}; }
if [ -d "$dst" ]; then place "$src" "\${dst%/}/\${src##*/}"; else place "$src" "$dst"; fi
`;

/** $1 path, $2 "1": the directory's contents (entries "./…"), else the path itself as the top entry. */
const copyOutScript = `
command -v tar >/dev/null 2>&1 || { echo "this image has no tar" >&2; exit ${exitNoTar}; }
p=$1
[ -e "$p" ] || [ -L "$p" ] || { echo "no such file or directory in the sandbox: $p" >&2; exit ${exitNotFound}; }
if [ "$2" = 1 ] || [ "$p" = / ]; then
  [ -d "$p" ] || { echo "not a directory in the sandbox: $p" >&2; exit ${exitNotFound}; }
  cd -- "$p" || exit ${exitRefused}
  exec tar -c -f - .
fi
cd -- "$(dirname -- "$p")" || exit ${exitRefused}
exec tar -c -f - -- "$(basename -- "$p")"
`;

/** stderr kept for an error message; the rest is read and dropped. */
const maxStderrBytes = 8 * 1024;

export interface PutArchiveOpts {
  path: string;
  into?: boolean;
  /** With into: a missing path is created (its parent must exist), as docker cp does for SRC/. */
  create?: boolean;
  user?: string;
  /** The tar stream; it is read one chunk at a time, as fast as the sandbox's tar takes it. */
  source: AsyncIterable<Uint8Array>;
}

export interface ArchiveStream {
  /** The tar bytes; throws COPY_FAILED when tar failed midway (the caller cuts its answer short). */
  chunks: AsyncIterable<Uint8Array>;
  /** Stops tar (a client that went away). */
  cancel(): void;
}

export interface SandboxFilesOpts {
  /** The most bytes one archive (or uploaded file) may have. */
  maxUploadBytes: number;
}

export class SandboxFiles {
  constructor(
    private readonly sandboxes: SandboxService,
    readonly opts: SandboxFilesOpts,
  ) {}

  /** Extracts a tar stream into a running sandbox (see copyInScript for the rules). */
  async putArchive(ownerId: string, ref: string, opts: PutArchiveOpts): Promise<{ path: string; bytes: number }> {
    const target = normaliseSandboxPath(opts.path);
    const sandbox = await this.sandboxes.ensureAwake(ownerId, ref);
    const tmpName = `.roost-cp-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 10)}`;
    const dst = target.trailingSlash && target.path !== '/' ? `${target.path}/` : target.path;
    const session = await this.sandboxes.exec(ownerId, sandbox.id, {
      command: ['sh', '-c', copyInScript, 'roost-cp', dst, tmpName, opts.into ? (opts.create ? '2' : '1') : '0'],
      user: opts.user ?? sandbox.defaultUser,
      stdin: 'stream',
    });
    const stderr = collectStderr(session.output);
    const stdin = session.stdin!;
    let bytes = 0;
    let failure: RoostError | undefined;
    try {
      for await (const chunk of opts.source) {
        bytes += chunk.length;
        if (bytes > this.opts.maxUploadBytes) {
          failure = new RoostError('UPLOAD_TOO_LARGE', `the archive is larger than ${this.opts.maxUploadBytes} bytes, the most this daemon takes (files.maxUploadBytes)`);
          break;
        }
        if (stdin.destroyed || stdin.writableEnded) break; // tar ended early: its exit says why
        if (!stdin.write(chunk)) await drained(stdin);
      }
    } catch (error) {
      failure = new RoostError('COPY_FAILED', `the upload was cut off after ${bytes} bytes: ${(error as Error).message}`);
    }
    if (failure) {
      session.cancel(failure.message);
      await session.done.catch(() => {});
      await stderr;
      // SIGKILL skips the script's trap: remove the temporary directory from either place it can be.
      await this.removeQuietly(ownerId, sandbox.id, opts.user ?? sandbox.defaultUser, [
        `${target.path === '/' ? '' : target.path}/${tmpName}`,
        `${parentOf(target.path)}/${tmpName}`.replace(/^\/\//, '/'),
      ]);
      throw failure;
    }
    stdin.end();
    const exit = await session.done;
    const message = await stderr;
    if (exit.exitCode !== 0) throw errorOfExit(exit.exitCode, message, `copy into ${target.path}`);
    return { path: target.path, bytes };
  }

  /** A tar stream of a path in a running sandbox; PATH_NOT_FOUND before any byte when it is missing. */
  async getArchive(ownerId: string, ref: string, opts: { path: string; user?: string }): Promise<ArchiveStream> {
    const source = normaliseSandboxPath(opts.path);
    const sandbox = await this.sandboxes.ensureAwake(ownerId, ref);
    const session = await this.sandboxes.exec(ownerId, sandbox.id, {
      command: ['sh', '-c', copyOutScript, 'roost-cp', source.path, source.contents ? '1' : '0'],
      user: opts.user ?? sandbox.defaultUser,
    });
    const output = session.output[Symbol.asyncIterator]();
    let stderr = '';
    const keepStderr = (data: Uint8Array) => {
      if (stderr.length < maxStderrBytes) stderr += new TextDecoder().decode(data).slice(0, maxStderrBytes - stderr.length);
    };
    // Nothing is answered until tar wrote its first bytes: a missing path is an error, never an empty tar.
    let first: Uint8Array | undefined;
    for (;;) {
      const next = await output.next();
      if (next.done) break;
      if (next.value.stream === 'stdout') {
        first = next.value.data;
        break;
      }
      keepStderr(next.value.data);
    }
    if (!first) {
      const exit = await session.done;
      throw errorOfExit(exit.exitCode === 0 ? exitRefused : exit.exitCode, stderr || 'tar wrote nothing', `copy ${source.path} out`);
    }
    const head = first;
    async function* chunks(): AsyncGenerator<Uint8Array> {
      yield head;
      for (;;) {
        const next = await output.next();
        if (next.done) break;
        if (next.value.stream === 'stdout') yield next.value.data;
        else keepStderr(next.value.data);
      }
      const exit = await session.done;
      // GNU tar exits 1 when a file changed while it was read (a log being written): the archive
      // is whole. 2 and above: it is not, and the caller must not pass it off as whole.
      if (exit.exitCode >= 2 || exit.signal) throw errorOfExit(exit.exitCode || exitRefused, stderr, `copy ${source.path} out`);
    }
    return { chunks: chunks(), cancel: () => session.cancel('the client went away') };
  }

  private async removeQuietly(ownerId: string, id: string, user: string, paths: string[]): Promise<void> {
    try {
      const session = await this.sandboxes.exec(ownerId, id, { command: ['rm', '-rf', '--', ...paths], user });
      for await (const _ of session.output);
      await session.done;
    } catch {
      // The sandbox may be gone; nothing is left to clean then.
    }
  }
}

function parentOf(path: string): string {
  const cut = path.lastIndexOf('/');
  return cut <= 0 ? '/' : path.slice(0, cut);
}

function errorOfExit(exitCode: number, stderr: string, what: string): RoostError {
  const said = stderr.replace(/^roost-cp: (line \d+: )?/gm, '').trim().split('\n').slice(-3).join('; ');
  if (exitCode === exitNoTar) return new RoostError('TAR_NOT_AVAILABLE', `cannot ${what}: ${said || 'this image has no tar'}`);
  if (exitCode === exitNotFound) return new RoostError('PATH_NOT_FOUND', said || `cannot ${what}: no such path`);
  if (exitCode === 127) return new RoostError('TAR_NOT_AVAILABLE', `cannot ${what}: the image lacks a tool it needs (${said || 'sh, tar, mv or cp'})`);
  return new RoostError('COPY_FAILED', `cannot ${what}: ${said || `exit code ${exitCode}`}`);
}

/** Reads the whole output, keeping the first bytes of stderr for a message. */
async function collectStderr(output: AsyncIterable<OutputChunk>): Promise<string> {
  let text = '';
  try {
    for await (const chunk of output) {
      if (chunk.stream === 'stderr' && text.length < maxStderrBytes) text += new TextDecoder().decode(chunk.data).slice(0, maxStderrBytes - text.length);
    }
  } catch {
    // The process was killed; its exit status tells.
  }
  return text;
}

/** Resolves when the pipe can take more, or is gone (tar exited: its exit status tells why). */
function drained(stream: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      stream.off('error', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
    stream.on('error', done);
  });
}

/** A file uploaded for later runs (POST /api/v1/files; Mags' uploadFiles). */
export interface UploadedFileRecord {
  id: string;
  ownerId: string;
  /** Its name in the run's working directory. */
  name: string;
  sizeBytes: number;
  createdAt: Date;
  expiresAt: Date;
}

/** Where uploaded files wait for the runs that name them (roostd keeps them in its data dir). */
export interface FileUploads {
  /** Stores the bytes; UPLOAD_TOO_LARGE past the per-file or per-user limit, leaving nothing. */
  save(ownerId: string, name: string, source: AsyncIterable<Uint8Array>): Promise<UploadedFileRecord>;
  /** FILE_NOT_FOUND when it is not the owner's, or expired. */
  get(ownerId: string, id: string): Promise<UploadedFileRecord>;
  content(file: UploadedFileRecord): AsyncIterable<Uint8Array>;
}

/** A file a run finds in its working directory before its script starts. */
export interface RunFile {
  name: string;
  open(): AsyncIterable<Uint8Array>;
}

/** Where a run's files land: the working directory of `roost run` (root's home). */
export const runFilesDir = '/root';

/**
 * Writes one file into the sandbox through a process inside it (`cat` into a temporary name,
 * then rename: the script never sees half a file).
 */
export async function placeRunFile(
  start: (command: string[]) => Promise<{ stdin?: Writable; stdout: AsyncIterable<Uint8Array>; stderr: AsyncIterable<Uint8Array>; wait(): Promise<{ exitCode: number }> }>,
  file: RunFile,
): Promise<void> {
  if (!/^[^/\0]+$/.test(file.name) || file.name === '.' || file.name === '..') throw new RoostError('INVALID_PATH', `"${file.name}" is not a file name`);
  const path = `${runFilesDir}/${file.name}`;
  const process = await start(['sh', '-c', 'cat > "$1.roost-part" && mv -f -- "$1.roost-part" "$1"', 'roost-f', path]);
  const stdin = process.stdin!;
  stdin.on('error', () => {});
  const drain = async (source: AsyncIterable<Uint8Array>, keep: boolean) => {
    let text = '';
    for await (const chunk of source) if (keep && text.length < maxStderrBytes) text += new TextDecoder().decode(chunk);
    return text.slice(0, maxStderrBytes);
  };
  const out = drain(process.stdout, false);
  const err = drain(process.stderr, true);
  for await (const chunk of file.open()) {
    if (stdin.destroyed) break;
    if (!stdin.write(chunk)) await drained(stdin);
  }
  stdin.end();
  const [exit, , message] = await Promise.all([process.wait(), out, err]);
  if (exit.exitCode !== 0) throw new RoostError('COPY_FAILED', `cannot put ${file.name} into ${runFilesDir}: ${message.trim() || `exit code ${exit.exitCode}`}`);
}
