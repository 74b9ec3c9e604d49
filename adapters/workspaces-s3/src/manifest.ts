// A snapshot's manifest: one JSON line per entry of the tree, in walk order (depth first, names
// sorted bytewise), gzipped, with a trailer line that counts them, so a truncated manifest is
// told apart from a complete one. The same file, kept locally, is the change cache of the next
// push (size, mtime, ctime, inode say whether a file must be read again), and since both are in
// the same order the next push compares them by walking both at once: memory stays one line,
// whatever the size of the tree.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
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
  /** A small file packed with others: its offset in the pack (the one object in `h`) and its
   *  own sha256. */
  o?: number;
  fh?: string;
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
    this.gzip = createGzip({ level: 1 });
    this.file = createWriteStream(path, { mode: 0o600 });
    this.gzip.pipe(this.file);
    this.done = new Promise((resolve, reject) => {
      this.file.on('close', resolve);
      this.file.on('error', reject);
      this.gzip.on('error', reject);
    });
    this.done.catch(() => {});
  }

  private pending = '';

  /** `line`: the entry's JSON when the caller has it already (an entry reused from the cache).
   *  Returns a promise only when the buffer went to the stream and it asked to wait. */
  write(entry: Entry, line?: string): Promise<void> | undefined {
    if (entry.t !== 'd') this.files++;
    if (entry.t === 'f' && entry.l === undefined && entry.lb === undefined) this.bytes += entry.s ?? 0;
    return this.writeLine(line ?? JSON.stringify(entry));
  }

  // Lines gather in a string of up to 64 KiB before they go to gzip and the digest: per-line
  // stream writes cost more than the rest of a no-op push together (measured: ~150 µs a file).
  private writeLine(line: string): Promise<void> | undefined {
    this.pending += line + '\n';
    if (this.pending.length < 65536) return undefined;
    return this.flush();
  }

  private flush(): Promise<void> | undefined {
    const data = this.pending;
    this.pending = '';
    this.digest.update(data);
    if (!this.gzip.write(data)) return new Promise<void>((resolve) => this.gzip.once('drain', resolve));
    return undefined;
  }

  /** Writes the trailer and closes; returns the sha256 of the uncompressed manifest. */
  async finish(): Promise<string> {
    const trailer: Trailer = { end: true, files: this.files, bytes: this.bytes };
    this.pending += JSON.stringify(trailer) + '\n';
    await this.flush();
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

export interface ManifestLine {
  entry: Entry;
  /** The line as stored, so an entry copied to the next manifest is not serialized again. */
  line: string;
}

/**
 * Reads a gzipped manifest stream in batches of entries (one batch per decompressed block:
 * a promise per block, not per line); after the last, `trailer` and `sha256` are set. Throws
 * ManifestCorrupt when it is not a complete manifest (no trailer, bad JSON, bad gzip).
 */
export async function* readManifestBatches(source: Readable, result: { trailer?: Trailer; sha256?: string } = {}): AsyncGenerator<ManifestLine[]> {
  const gunzip = createGunzip();
  const digest = createHash('sha256');
  source.on('error', (error) => gunzip.destroy(error));
  source.pipe(gunzip);
  let trailer: Trailer | undefined;
  let partial = '';
  // A block may end inside a multi-byte character: the decoder keeps it for the next block.
  const decoder = new StringDecoder('utf8');
  try {
    for await (const block of gunzip) {
      const text = partial + decoder.write(block as Buffer);
      const cut = text.lastIndexOf('\n');
      if (cut < 0) {
        partial = text;
        continue;
      }
      partial = text.slice(cut + 1);
      const complete = text.slice(0, cut + 1);
      digest.update(complete);
      const batch: ManifestLine[] = [];
      for (const line of complete.slice(0, -1).split('\n')) {
        if (trailer) throw new ManifestCorrupt('a line after the trailer');
        let parsed: Entry | Trailer;
        try {
          parsed = JSON.parse(line) as Entry | Trailer;
        } catch {
          throw new ManifestCorrupt('a line that is not JSON');
        }
        if ((parsed as Trailer).end === true) trailer = parsed as Trailer;
        else batch.push({ entry: parsed as Entry, line });
      }
      if (batch.length > 0) yield batch;
    }
  } catch (error) {
    if (error instanceof ManifestCorrupt) throw error;
    const e = error as { code?: string; message?: string };
    if (e.code?.startsWith('Z_')) throw new ManifestCorrupt(`not gzip: ${e.message}`);
    throw error;
  } finally {
    source.destroy();
    gunzip.destroy();
  }
  if (!trailer || partial !== '') throw new ManifestCorrupt('it ends before its trailer (truncated)');
  result.trailer = trailer;
  result.sha256 = digest.digest('hex');
}

/** The same, entry by entry. */
export async function* readManifest(source: Readable, result: { trailer?: Trailer; sha256?: string } = {}): AsyncGenerator<Entry> {
  for await (const batch of readManifestBatches(source, result)) for (const { entry } of batch) yield entry;
}

export function readManifestFile(path: string, result?: { trailer?: Trailer; sha256?: string }): AsyncGenerator<ManifestLine[]> {
  return readManifestBatches(createReadStream(path), result);
}
