// A snapshot's manifest: one JSON line per entry of the tree, in walk order (depth first, names
// sorted bytewise), gzipped, with a trailer line that counts them, so a truncated manifest is
// told apart from a complete one. The same file, kept locally, is the change cache of the next
// push (size, mtime, ctime, inode say whether a file must be read again), and since both are in
// the same order the next push compares them by walking both at once: memory stays one line,
// whatever the size of the tree.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { createGunzip, createGzip, type Gzip } from 'node:zlib';

export type EntryType = 'd' | 'f' | 'l' | 'c' | 'b' | 'p' | 's';

export interface Entry {
  /** Path relative to the tree's root ('' is the root), '/' between names; UTF-8 when the name
   *  is, otherwise `pb` holds it in base64 and `p` is absent. */
  p?: string;
  pb?: string;
  t: EntryType;
  /** Permission bits (mode & 0o7777). */
  m: number;
  u: number;
  g: number;
  /** mtime in nanoseconds, as a decimal string (beyond a double's precision). */
  mt: string;
  /** ctime (ns) and inode: not restored, they only tell the next push what changed. */
  ct: string;
  i: string;
  /** Regular file: size and the sha256 of each chunk. */
  s?: number;
  h?: string[];
  /** A hard link: the path (same encoding as p/pb) of the entry that holds the content. */
  l?: string;
  lb?: string;
  /** Symlink target, base64 (any bytes). */
  tg?: string;
  /** Device number of c/b entries (whiteouts: 0). */
  r?: number;
  /** xattrs: [name, base64 value]. */
  x?: [string, string][];
}

export interface Trailer {
  end: true;
  files: number;
  bytes: number;
}

export function encodePath(path: Buffer): { text?: string; base64?: string } {
  const text = path.toString('utf8');
  return Buffer.from(text, 'utf8').equals(path) ? { text } : { base64: path.toString('base64') };
}

export function entryPath(entry: Entry): Buffer {
  return entry.pb !== undefined ? Buffer.from(entry.pb, 'base64') : Buffer.from(entry.p ?? '', 'utf8');
}

export function linkPath(entry: Entry): Buffer | null {
  if (entry.lb !== undefined) return Buffer.from(entry.lb, 'base64');
  return entry.l !== undefined ? Buffer.from(entry.l, 'utf8') : null;
}

/** Walk order: bytewise, with '/' below every other byte (a directory's entries come right after
 *  it, before a sibling whose name extends its own: "a", "a/b", "a-c"). */
export function comparePaths(a: Buffer, b: Buffer): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    const x = a[i] === 0x2f ? 0 : a[i]!;
    const y = b[i] === 0x2f ? 0 : b[i]!;
    if (x !== y) return x - y;
  }
  return a.length - b.length;
}

/** Writes a manifest to a local file, hashing the uncompressed lines (the snapshot's identity:
 *  an unchanged tree gives the same digest, and a push has nothing to write). */
export class ManifestWriter {
  private readonly gzip: Gzip;
  private readonly file: WriteStream;
  private readonly digest: Hash = createHash('sha256');
  private readonly done: Promise<void>;
  files = 0;
  bytes = 0;

  constructor(readonly path: string) {
    this.gzip = createGzip({ level: 6 });
    this.file = createWriteStream(path, { mode: 0o600 });
    this.gzip.pipe(this.file);
    this.done = new Promise((resolve, reject) => {
      this.file.on('close', resolve);
      this.file.on('error', reject);
      this.gzip.on('error', reject);
    });
    this.done.catch(() => {});
  }

  /** Resolves once the line is buffered below the stream's high-water mark (back pressure). */
  async write(entry: Entry): Promise<void> {
    if (entry.t !== 'd') this.files++;
    if (entry.t === 'f' && entry.l === undefined && entry.lb === undefined) this.bytes += entry.s ?? 0;
    await this.writeLine(JSON.stringify(entry));
  }

  private async writeLine(line: string): Promise<void> {
    const data = line + '\n';
    this.digest.update(data);
    if (!this.gzip.write(data)) await new Promise<void>((resolve) => this.gzip.once('drain', resolve));
  }

  /** Writes the trailer and closes; returns the sha256 of the uncompressed manifest. */
  async finish(): Promise<string> {
    const trailer: Trailer = { end: true, files: this.files, bytes: this.bytes };
    await this.writeLine(JSON.stringify(trailer));
    this.gzip.end();
    await this.done;
    return this.digest.digest('hex');
  }

  async abort(): Promise<void> {
    this.gzip.destroy();
    this.file.destroy();
    await this.done.catch(() => {});
  }
}

export class ManifestCorrupt extends Error {}

/**
 * Reads a gzipped manifest stream entry by entry; after the last entry, `trailer` and `sha256`
 * are set. Throws ManifestCorrupt when it is not a complete manifest (no trailer, bad JSON, bad gzip).
 */
export async function* readManifest(source: Readable, result: { trailer?: Trailer; sha256?: string } = {}): AsyncGenerator<Entry> {
  const gunzip = createGunzip();
  const digest = createHash('sha256');
  source.on('error', (error) => gunzip.destroy(error));
  source.pipe(gunzip);
  const lines = createInterface({ input: gunzip, crlfDelay: Infinity });
  let trailer: Trailer | undefined;
  try {
    for await (const line of lines) {
      digest.update(line + '\n');
      if (trailer) throw new ManifestCorrupt('a line after the trailer');
      let parsed: Entry | Trailer;
      try {
        parsed = JSON.parse(line) as Entry | Trailer;
      } catch {
        throw new ManifestCorrupt('a line that is not JSON');
      }
      if ((parsed as Trailer).end === true) trailer = parsed as Trailer;
      else yield parsed as Entry;
    }
  } catch (error) {
    if (error instanceof ManifestCorrupt) throw error;
    const e = error as { code?: string; message?: string };
    if (e.code?.startsWith('Z_')) throw new ManifestCorrupt(`not gzip: ${e.message}`);
    throw error;
  } finally {
    source.destroy();
  }
  if (!trailer) throw new ManifestCorrupt('it ends before its trailer (truncated)');
  result.trailer = trailer;
  result.sha256 = digest.digest('hex');
}

export function readManifestFile(path: string, result?: { trailer?: Trailer; sha256?: string }): AsyncGenerator<Entry> {
  return readManifest(createReadStream(path), result);
}
