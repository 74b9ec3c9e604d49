// The S3 sync engine: a directory that does not change while it is read (a read-only btrfs
// snapshot of a workspace) → content-addressed chunks, a manifest, a pointer; and back.
// Written by hand because no maintained library does this for us: restic 0.14 (Debian) was
// measured at ~1 s per no-op and fails against s3rver; see docs/workspaces.md for the figures.
//
// Layout in the bucket (under the configured prefix):
//   chunks/<h[0:2]>/<sha256>                       file content, 1 MiB pieces, shared by all workspaces
//   workspaces/<id>/snapshots/<snapshotId>.ndjson.gz  one manifest per snapshot (manifest.ts)
//   workspaces/<id>/head.json                      the pointer: the newest complete snapshot
//   leases/push-<n>, leases/gc-<n>                 who is pushing or collecting (see gc())
// Write order of a push: chunks, then the manifest, then the pointer, so a push killed at any
// point leaves the previous snapshot whole, and whatever it names is complete.
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, closeSync, createReadStream, existsSync, lchownSync, linkSync, lstatSync, mkdirSync, openSync, readdirSync, symlinkSync, writeSync } from 'node:fs';
import { mkdir, open, readFile, readlink, rename, rm, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, dirname, join } from 'node:path';
import type { BigIntStats } from 'node:fs';
import { RoostError, type Logger, type WorkspaceSnapshot } from '@roost/core';
import { FsMeta } from './fsmeta.js';
import {
  comparePaths,
  encodePath,
  entryPath,
  linkPath,
  ManifestCorrupt,
  ManifestWriter,
  readManifest,
  readManifestFile,
  type Entry,
  type ManifestLine,
  type EntryType,
  type Trailer,
} from './manifest.js';
import { TaskPool } from './pool.js';
import { describeStore, ObjectStore, type S3StoreConfig } from './store.js';

/**
 * 1 MiB: a 1 MiB change costs ~1 MiB of upload (4 MiB chunks would send 4 for a 1 MiB write in
 * a large file), it is the object size s3rver and most S3s serve at full rate (s3rver measured
 * near 97 MB/s on 1 MiB objects), and a 1 TB workspace is a million chunks, which a manifest
 * line per file and the GC's set still hold comfortably. Files smaller than a chunk are one
 * chunk of their own size (not packed: see docs/workspaces.md for the measurement).
 */
export const DEFAULT_CHUNK_BYTES = 1024 * 1024;

/**
 * Files up to this size are packed, many to one object of up to PACK_BYTES, instead of one
 * object each. Measured on the benchmark's tree (6,000 files, 5,900 of them ~36 KB) against
 * s3rver: restore was bound by requests, not bytes (~1 ms a request), and packing made it
 * ~1.5× faster. The cost: a small file's content is stored once per pack it was written to, so
 * two workspaces holding the same small file store it twice (large files are still stored once
 * across all workspaces), and a pack stays whole while any file in it is referenced.
 */
export const SMALL_FILE_BYTES = 64 * 1024;
export const PACK_BYTES = 1024 * 1024;
const PACK_MAX_FILES = 4096;

export interface SyncEngineOpts {
  store: S3StoreConfig;
  /** Local dir for the change cache (the last pushed manifest of each workspace). */
  cacheDir: string;
  /** Snapshots kept per workspace (the newest N; the pointer's is always kept). */
  keepSnapshots: number;
  chunkBytes?: number;
  /** Requests in flight at once (uploads in a push, downloads in a restore). */
  concurrency?: number;
  fsmetaPath?: string;
  /** A lease not refreshed for this long is dead (its holder crashed). Default 2 min. */
  leaseTtlMs?: number;
  logger?: Logger;
}

export interface PushResult {
  snapshot: WorkspaceSnapshot;
  /** Nothing changed since the pointer's snapshot: nothing was written, `snapshot` is that one. */
  unchanged: boolean;
  uploadedBytes: number;
  uploadedChunks: number;
  /** Files read and hashed (their stat changed) and files taken from the cache unread. */
  hashedFiles: number;
  reusedFiles: number;
}

export interface GcResult {
  /** Another push held a lease: nothing was deleted, try again later. */
  deferred: boolean;
  deletedChunks: number;
  keptChunks: number;
}

interface Head {
  v: 1;
  snapshotId: string;
  takenAt: string;
  manifestSha256: string;
  files: number;
  bytes: number;
  chunkBytes: number;
}

interface CacheMeta {
  snapshotId: string;
  manifestSha256: string;
  chunkBytes: number;
}

const WORKSPACE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const SNAPSHOT_ID = /^\d{8}T\d{9}Z-[0-9a-f]{8}$/;
/** Problems listed by name in a WORKSPACE_UNREADABLE error; the rest are counted. */
const MAX_LISTED_PROBLEMS = 20;
const typeBits: Record<string, number> = { c: 0o020000, b: 0o060000, p: 0o010000, s: 0o140000 };

function checkWorkspaceId(id: string): void {
  if (!WORKSPACE_ID.test(id)) throw new RoostError('VALIDATION_FAILED', `"${id}" is not a workspace id the store can hold`);
}

function newSnapshotId(at: Date): string {
  const stamp = at.toISOString().replace(/[-:]/g, '').replace('.', '');
  return `${stamp}-${randomBytes(4).toString('hex')}`;
}

function snapshotTime(id: string): Date {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(\d{3})Z/.exec(id);
  return m ? new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!, +m[7]!)) : new Date(0);
}

function typeOf(st: BigIntStats): EntryType {
  if (st.isDirectory()) return 'd';
  if (st.isFile()) return 'f';
  if (st.isSymbolicLink()) return 'l';
  if (st.isCharacterDevice()) return 'c';
  if (st.isBlockDevice()) return 'b';
  if (st.isFIFO()) return 'p';
  return 's';
}

const keys = {
  chunk: (hash: string) => `chunks/${hash.slice(0, 2)}/${hash}`,
  workspace: (ws: string) => `workspaces/${ws}/`,
  manifest: (ws: string, id: string) => `workspaces/${ws}/snapshots/${id}.ndjson.gz`,
  snapshots: (ws: string) => `workspaces/${ws}/snapshots/`,
  head: (ws: string) => `workspaces/${ws}/head.json`,
};

function joinRel(parent: Buffer, name: Buffer): Buffer {
  return parent.length === 0 ? name : Buffer.concat([parent, Buffer.from('/'), name]);
}

function isUnder(parent: Buffer, child: Buffer): boolean {
  return parent.length === 0 || (child.length > parent.length && child[parent.length] === 0x2f && child.subarray(0, parent.length).equals(parent));
}

/**
 * The tree in manifest order, depth first, names sorted bytewise. Memory: one directory listing
 * per level. Synchronous calls on purpose: lstat through the thread pool cost ~20 µs a file
 * against ~3 µs here, and a no-op push is nothing but this walk (the snapshot is read-only and
 * local, so a call never waits long).
 */
function* walk(root: string, rel: Buffer = Buffer.alloc(0)): Generator<{ rel: Buffer; abs: Buffer; st: BigIntStats }> {
  const abs = rel.length === 0 ? Buffer.from(root) : Buffer.concat([Buffer.from(root + '/'), rel]);
  const st = lstatSync(abs, { bigint: true });
  yield { rel, abs, st };
  if (!st.isDirectory()) return;
  const names = readdirSync(abs, { encoding: 'buffer' });
  names.sort(Buffer.compare);
  for (const name of names) yield* walk(root, joinRel(rel, name));
}

/** A lease object that says "a push (or GC) is running here"; refreshed while held. */
class Lease {
  private timer: NodeJS.Timeout | null = null;
  private lastRefreshMs = Date.now();
  /** Longest time between two successful refreshes: past the TTL the lease was seen as dead. */
  private longestGapMs = 0;
  private constructor(
    private readonly store: ObjectStore,
    readonly key: string,
    private readonly ttlMs: number,
  ) {}

  static async take(store: ObjectStore, kind: 'push' | 'gc', ttlMs: number): Promise<Lease> {
    const lease = new Lease(store, `leases/${kind}-${Date.now()}-${randomBytes(4).toString('hex')}`, ttlMs);
    await lease.refresh();
    lease.timer = setInterval(() => void lease.refresh().catch(() => {}), Math.max(50, ttlMs / 4));
    lease.timer.unref();
    return lease;
  }

  private async refresh(): Promise<void> {
    await this.store.put(this.key, Buffer.from(JSON.stringify({ host: hostname(), pid: process.pid, at: new Date().toISOString() })));
    const now = Date.now();
    this.longestGapMs = Math.max(this.longestGapMs, now - this.lastRefreshMs);
    this.lastRefreshMs = now;
  }

  /** Throws when the lease may have looked dead to others at some point. */
  check(): void {
    const gap = Math.max(this.longestGapMs, Date.now() - this.lastRefreshMs);
    if (gap > this.ttlMs / 2) {
      throw new RoostError('WORKSPACE_SYNC_FAILED', `the store's lease was not refreshed for ${Math.round(gap / 1000)} s; the push is abandoned (the next one redoes it)`);
    }
  }

  async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.store.delete(this.key).catch(() => {});
  }

  /** Live leases of `kind` (refreshed within the TTL), other than `except`. */
  static async live(store: ObjectStore, kind: 'push' | 'gc', ttlMs: number, except?: string): Promise<string[]> {
    const live: string[] = [];
    for await (const object of store.list(`leases/${kind}-`)) {
      if (object.key !== except && Date.now() - object.lastModified.getTime() < ttlMs) live.push(object.key);
    }
    return live;
  }
}

export class SyncEngine {
  readonly store: ObjectStore;
  private readonly chunkBytes: number;
  private readonly concurrency: number;
  private readonly leaseTtlMs: number;
  /** One push per workspace at a time in this process (the pointer has one writer). */
  private readonly pushing = new Map<string, Promise<unknown>>();

  constructor(private readonly opts: SyncEngineOpts) {
    this.store = new ObjectStore(opts.store);
    this.chunkBytes = opts.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    this.concurrency = opts.concurrency ?? 16;
    this.leaseTtlMs = opts.leaseTtlMs ?? 120_000;
  }

  get where(): string {
    return describeStore(this.opts.store);
  }

  private cachePaths(ws: string) {
    return { manifest: join(this.opts.cacheDir, `${ws}.manifest.gz`), meta: join(this.opts.cacheDir, `${ws}.cache.json`) };
  }

  async head(ws: string): Promise<Head | null> {
    checkWorkspaceId(ws);
    const data = await this.store.get(keys.head(ws), 64 * 1024);
    if (!data) return null;
    try {
      return JSON.parse(data.toString()) as Head;
    } catch {
      throw new RoostError('WORKSPACE_UNREADABLE', `the pointer of workspace ${ws} in the store is not valid JSON`, { workspace: ws, corrupted: [keys.head(ws)] });
    }
  }

  /**
   * Uploads what changed in `snapshotDir` since this workspace's last push and makes it the
   * newest snapshot. Only files whose size, mtime, ctime or inode differ from the local cache
   * are read; only chunks the store lacks are sent.
   */
  async push(snapshotDir: string, ws: string): Promise<PushResult> {
    checkWorkspaceId(ws);
    const before = this.pushing.get(ws) ?? Promise.resolve();
    const run = before.catch(() => {}).then(() => this.pushNow(snapshotDir, ws));
    this.pushing.set(ws, run);
    try {
      return await run;
    } finally {
      if (this.pushing.get(ws) === run) this.pushing.delete(ws);
    }
  }

  private async pushNow(snapshotDir: string, ws: string): Promise<PushResult> {
    const startedAt = Date.now();
    const takenAt = new Date();
    const head = await this.head(ws);
    await mkdir(this.opts.cacheDir, { recursive: true, mode: 0o700 });
    const cache = this.cachePaths(ws);
    // The cache counts only when it is the pointer's snapshot: its chunks are then referenced by
    // a manifest the store keeps, so unchanged files need neither reading nor any request.
    let cacheValid = false;
    try {
      const meta = JSON.parse(await readFile(cache.meta, 'utf8')) as CacheMeta;
      cacheValid = head !== null && meta.snapshotId === head.snapshotId && meta.chunkBytes === this.chunkBytes && existsSync(cache.manifest);
    } catch {
      cacheValid = false;
    }
    const previous = cacheValid ? readManifestFile(cache.manifest) : null;
    const cursor: { entry: Entry | null; line: string; path: Buffer; batch: ManifestLine[]; index: number } = {
      entry: null,
      line: '',
      path: Buffer.alloc(0),
      batch: [],
      index: 0,
    };
    const nextPrev = async () => {
      if (cursor.index >= cursor.batch.length) {
        const step = previous ? await previous.next() : { done: true as const, value: undefined };
        cursor.batch = step.done ? [] : step.value;
        cursor.index = 0;
      }
      const item = cursor.batch[cursor.index++];
      cursor.entry = item?.entry ?? null;
      cursor.line = item?.line ?? '';
      if (item) cursor.path = entryPath(item.entry);
    };
    await nextPrev();

    const snapshotId = newSnapshotId(takenAt);
    const tmpManifest = join(this.opts.cacheDir, `.${ws}.${snapshotId}.manifest.gz.tmp`);
    const writer = new ManifestWriter(tmpManifest);
    const pool = new TaskPool(this.concurrency);
    // Started on the first changed entry: a no-op push needs no helper.
    let fsmetaProcess: FsMeta | null = null;
    const fsmeta = () => (fsmetaProcess ??= new FsMeta(this.opts.fsmetaPath));
    const seen = new Set<string>();
    const hardlinks = new Map<string, Buffer>();
    const result = { uploadedBytes: 0, uploadedChunks: 0, hashedFiles: 0, reusedFiles: 0 };
    let lease: Lease | null = null;
    const ensureLease = async () => {
      if (lease) return lease;
      lease = await Lease.take(this.store, 'push', this.leaseTtlMs);
      // A GC that started first finishes (or its lease lapses) before this push relies on any
      // chunk it did not upload itself: see gc().
      while ((await Lease.live(this.store, 'gc', this.leaseTtlMs)).length > 0) await new Promise((r) => setTimeout(r, 500));
      return lease;
    };
    const sendChunk = async (hash: string, data: Buffer, probe = true) => {
      if (seen.has(hash)) return;
      seen.add(hash);
      await ensureLease();
      await pool.add(async () => {
        const key = keys.chunk(hash);
        if (!probe) {
          // A new pack: no other push made the same one, so no HEAD first.
          await this.store.put(key, data);
          result.uploadedBytes += data.length;
          result.uploadedChunks++;
          return;
        }
        // Stored by another push or workspace: kept once. The size is checked because a PUT cut
        // off mid-body leaves a truncated object on s3rver (measured: a push killed with -9);
        // AWS never stores a partial PUT, but the next push must not trust one anywhere.
        const existing = await this.store.head(key);
        if (existing && existing.size === data.length) return;
        await this.store.put(key, data);
        result.uploadedBytes += data.length;
        result.uploadedChunks++;
      });
    };

    // Small changed files go to the open pack; their manifest lines, and every line after them,
    // wait until the pack is sealed and its hash known, so the manifest stays in walk order.
    const pack = { parts: [] as Buffer[], bytes: 0, entries: [] as Entry[] };
    const held: { entry: Entry; line?: string }[] = [];
    const emit = async (entry: Entry, line?: string) => {
      if (held.length > 0) held.push({ entry, line });
      else {
        const wait = writer.write(entry, line);
        if (wait) await wait;
      }
    };
    const sealPack = async () => {
      if (pack.entries.length === 0) return;
      const data = Buffer.concat(pack.parts, pack.bytes);
      const packHash = createHash('sha256').update(data).digest('hex');
      for (const entry of pack.entries) entry.h = [packHash];
      pack.parts = [];
      pack.bytes = 0;
      pack.entries = [];
      await sendChunk(packHash, data, false);
      for (const { entry, line } of held.splice(0)) {
        const wait = writer.write(entry, line);
        if (wait) await wait;
      }
    };
    try {
      for (const { rel, abs, st } of walk(snapshotDir)) {
        while (cursor.entry && comparePaths(cursor.path, rel) < 0) await nextPrev();
        const same: Entry | null = cursor.entry && cursor.path.equals(rel) ? cursor.entry : null;
        const t = typeOf(st);
        const ino = st.ino.toString();
        if (t === 'f' && st.nlink > 1n) {
          const first = hardlinks.get(ino);
          if (!first) hardlinks.set(ino, rel);
        }
        if (
          same &&
          same.t === t &&
          same.mt === st.mtimeNs.toString() &&
          same.ct === st.ctimeNs.toString() &&
          same.i === ino &&
          (t !== 'f' || same.s === Number(st.size))
        ) {
          if (t === 'f') result.reusedFiles++;
          await emit(same, cursor.line);
          continue;
        }
        const path = encodePath(rel);
        const entry: Entry = {
          ...(path.text !== undefined ? { p: path.text } : { pb: path.base64 }),
          t,
          m: Number(st.mode & 0o7777n),
          u: Number(st.uid),
          g: Number(st.gid),
          mt: st.mtimeNs.toString(),
          ct: st.ctimeNs.toString(),
          i: ino,
        };
        const xattrs = await fsmeta().listXattrs(abs);
        if (xattrs.length > 0) entry.x = xattrs.map(([name, value]) => [name, value.toString('base64')]);
        if (t === 'l') entry.tg = (await readlink(abs, { encoding: 'buffer' })).toString('base64');
        if (t === 'c' || t === 'b') entry.r = Number(st.rdev);
        if (t === 'f') {
          const first = hardlinks.get(ino);
          if (first && !first.equals(rel)) {
            const target = encodePath(first);
            if (target.text !== undefined) entry.l = target.text;
            else entry.lb = target.base64;
            entry.s = Number(st.size);
          } else if (st.size > 0n && st.size <= BigInt(SMALL_FILE_BYTES)) {
            result.hashedFiles++;
            const data = await readFile(abs);
            entry.s = data.length;
            entry.o = pack.bytes;
            entry.fh = createHash('sha256').update(data).digest('hex');
            pack.parts.push(data);
            pack.bytes += data.length;
            pack.entries.push(entry);
            held.push({ entry });
            if (pack.bytes >= PACK_BYTES || pack.entries.length >= PACK_MAX_FILES) await sealPack();
            continue;
          } else {
            result.hashedFiles++;
            const prevHashes = same?.t === 'f' ? (same.h ?? []) : [];
            const { size, hashes } = await this.hashFile(abs, async (index, hash, data) => {
              // The same chunk at the same place in the pointer's snapshot: already referenced there.
              if (prevHashes[index] !== hash) await sendChunk(hash, data);
            });
            entry.s = size;
            entry.h = hashes;
          }
        }
        await emit(entry);
      }
      await sealPack();
      await pool.drain();
      const manifestSha256 = await writer.finish();
      if (head && head.manifestSha256 === manifestSha256) {
        await rm(tmpManifest, { force: true });
        return { ...result, unchanged: true, snapshot: { id: head.snapshotId, takenAt: new Date(head.takenAt), bytes: head.bytes, files: head.files } };
      }
      if (lease) (lease as Lease).check();
      const next: Head = {
        v: 1,
        snapshotId,
        takenAt: takenAt.toISOString(),
        manifestSha256,
        files: writer.files,
        bytes: writer.bytes,
        chunkBytes: this.chunkBytes,
      };
      const manifestSize = (await stat(tmpManifest)).size;
      await this.store.put(keys.manifest(ws, snapshotId), createReadStream(tmpManifest), {
        contentLength: manifestSize,
        contentType: 'application/gzip',
        metadata: { sha256: manifestSha256, files: String(next.files), bytes: String(next.bytes), 'chunk-bytes': String(this.chunkBytes), 'taken-at': next.takenAt },
      });
      result.uploadedBytes += manifestSize;
      // The cache becomes this snapshot before the pointer does: if the pointer write fails, the
      // cache names a snapshot that is not the pointer's, and the next push simply rereads all.
      await rename(tmpManifest, cache.manifest);
      const meta: CacheMeta = { snapshotId, manifestSha256, chunkBytes: this.chunkBytes };
      await writeFile(cache.meta + '.tmp', JSON.stringify(meta), { mode: 0o600 });
      await rename(cache.meta + '.tmp', cache.meta);
      await this.store.put(keys.head(ws), Buffer.from(JSON.stringify(next)), { contentType: 'application/json' });
      this.opts.logger?.info(
        { workspaceId: ws, snapshotId, uploadedBytes: result.uploadedBytes, hashedFiles: result.hashedFiles, ms: Date.now() - startedAt },
        'workspace pushed',
      );
      await this.prune(ws).catch((error: unknown) =>
        this.opts.logger?.warn({ workspaceId: ws, error: String((error as Error).message) }, 'old snapshots not pruned'),
      );
      return { ...result, unchanged: false, snapshot: { id: snapshotId, takenAt, bytes: next.bytes, files: next.files } };
    } catch (error) {
      await pool.settle();
      await writer.abort();
      await rm(tmpManifest, { force: true });
      throw error;
    } finally {
      await previous?.return(undefined);
      await (fsmetaProcess as FsMeta | null)?.close();
      if (lease) await (lease as Lease).release();
    }
  }

  /** Reads a file chunk by chunk (one chunk in memory per call), hashing each. */
  private async hashFile(
    abs: Buffer,
    onChunk: (index: number, hash: string, data: Buffer) => Promise<void>,
  ): Promise<{ size: number; hashes: string[] }> {
    const file = await open(abs, 'r');
    const hashes: string[] = [];
    let size = 0;
    try {
      for (;;) {
        const data = Buffer.allocUnsafe(this.chunkBytes);
        let filled = 0;
        while (filled < data.length) {
          const { bytesRead } = await file.read(data, filled, data.length - filled, size + filled);
          if (bytesRead === 0) break;
          filled += bytesRead;
        }
        if (filled === 0 && hashes.length > 0) break;
        if (filled === 0) break; // empty file: no chunks
        const piece = filled === data.length ? data : data.subarray(0, filled);
        const hash = createHash('sha256').update(piece).digest('hex');
        await onChunk(hashes.length, hash, piece);
        hashes.push(hash);
        size += filled;
        if (filled < data.length) break;
      }
    } finally {
      await file.close();
    }
    return { size, hashes };
  }

  /** The workspace's snapshots in the store, oldest first. */
  async snapshots(ws: string): Promise<WorkspaceSnapshot[]> {
    checkWorkspaceId(ws);
    const found: WorkspaceSnapshot[] = [];
    for await (const object of this.store.list(keys.snapshots(ws))) {
      const id = basename(object.key).replace(/\.ndjson\.gz$/, '');
      if (!SNAPSHOT_ID.test(id)) continue;
      const info = await this.store.head(object.key);
      if (!info) continue; // pruned meanwhile
      found.push({ id, takenAt: snapshotTime(id), bytes: Number(info.metadata.bytes ?? 0), files: Number(info.metadata.files ?? 0) });
    }
    return found.sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  /** Deletes all but the newest `keepSnapshots` manifests (never the pointer's). */
  async prune(ws: string): Promise<string[]> {
    const head = await this.head(ws);
    const all = await this.snapshots(ws);
    const doomed = all.slice(0, Math.max(0, all.length - Math.max(1, this.opts.keepSnapshots))).filter((s) => s.id !== head?.snapshotId);
    for (const snapshot of doomed) await this.store.delete(keys.manifest(ws, snapshot.id));
    return doomed.map((s) => s.id);
  }

  /**
   * Restores a snapshot (default: the pointer's) into `intoDir`, which must not exist. Every
   * chunk's hash is checked; the tree is built in a temporary sibling and renamed into place
   * only when all of it is there and right, so a failed or killed restore never leaves a
   * directory that looks complete. Rejects WORKSPACE_UNREADABLE naming what is missing or corrupt.
   */
  async restore(ws: string, intoDir: string, opts: { snapshotId?: string } = {}): Promise<WorkspaceSnapshot> {
    checkWorkspaceId(ws);
    const head = await this.head(ws);
    const snapshotId = opts.snapshotId ?? head?.snapshotId;
    if (!snapshotId) throw new RoostError('WORKSPACE_SNAPSHOT_NOT_FOUND', `workspace ${ws} has no snapshot in ${this.where}`, { workspace: ws });
    if (!SNAPSHOT_ID.test(snapshotId)) throw new RoostError('WORKSPACE_SNAPSHOT_NOT_FOUND', `"${snapshotId}" is not a snapshot id`);
    const manifestKey = keys.manifest(ws, snapshotId);
    const manifest = await this.store.getStream(manifestKey);
    if (!manifest) {
      if (snapshotId === head?.snapshotId) {
        throw new RoostError('WORKSPACE_UNREADABLE', `workspace ${ws}: the manifest of its newest snapshot ${snapshotId} is missing from ${this.where}`, {
          workspace: ws,
          snapshotId,
          missing: [manifestKey],
        });
      }
      throw new RoostError('WORKSPACE_SNAPSHOT_NOT_FOUND', `workspace ${ws} has no snapshot ${snapshotId} (\`roost workspace snapshots ${ws}\` lists them)`, { workspace: ws });
    }
    const expectedSha = manifest.metadata.sha256 ?? (snapshotId === head?.snapshotId ? head.manifestSha256 : undefined);
    const chunkBytes = Number(manifest.metadata['chunk-bytes'] ?? head?.chunkBytes ?? DEFAULT_CHUNK_BYTES);
    if (existsSync(intoDir)) {
      manifest.body.destroy();
      throw new RoostError('VALIDATION_FAILED', `${intoDir} exists: a restore makes its directory itself`);
    }
    const tmp = join(dirname(intoDir), `.${basename(intoDir)}.restoring-${randomBytes(4).toString('hex')}`);
    await mkdir(tmp, { mode: 0o700 });
    const root = Buffer.from(tmp);
    const absOf = (rel: Buffer) => (rel.length === 0 ? root : Buffer.concat([root, Buffer.from('/'), rel]));
    const fsmeta = new FsMeta(this.opts.fsmetaPath);
    const pool = new TaskPool(this.concurrency);
    const problems = { missing: [] as string[], corrupted: [] as string[], count: 0 };
    const problem = (kind: 'missing' | 'corrupted', what: string) => {
      problems.count++;
      if (problems.missing.length + problems.corrupted.length < MAX_LISTED_PROBLEMS) problems[kind].push(what);
    };
    // The helper's answers are not awaited one by one (it runs them in order; a push's worth of
    // round trips was a fifth of a restore): failures are kept and thrown at the end, and at
    // most 1,000 requests wait at once.
    let helperWaiting = 0;
    let helperError: unknown = null;
    const helperIdle: (() => void)[] = [];
    const viaHelper = async (request: Promise<void>) => {
      helperWaiting++;
      void request
        .catch((error: unknown) => void (helperError ??= error))
        .finally(() => {
          helperWaiting--;
          if (helperWaiting < 1000) for (const resolve of helperIdle.splice(0)) resolve();
        });
      while (helperWaiting >= 1000) await new Promise<void>((resolve) => helperIdle.push(resolve));
    };
    // Sync calls on purpose, as in the push's walk: each async fs call cost more main-thread
    // time than the work itself, and a restore is CPU-bound on the main thread (measured).
    const finish = async (abs: Buffer, entry: Entry) => {
      lchownSync(abs, entry.u, entry.g);
      if (entry.t !== 'l') chmodSync(abs, entry.m);
      for (const [name, value] of entry.x ?? []) await viaHelper(fsmeta.setXattr(abs, name, Buffer.from(value, 'base64')));
      await viaHelper(fsmeta.setTimes(abs, BigInt(entry.mt)));
    };
    const buffers: Buffer[] = [];
    // Packs of small files: consecutive entries share one, so the last few are kept (promises,
    // so two files of one pack never fetch it twice). Each file's bytes are checked on their own.
    const packs = new Map<string, Promise<Buffer | null>>();
    const getPack = (hash: string) => {
      let found = packs.get(hash);
      if (found) packs.delete(hash);
      else found = this.store.get(keys.chunk(hash), PACK_BYTES + SMALL_FILE_BYTES);
      packs.set(hash, found);
      if (packs.size > 2 * this.concurrency) packs.delete(packs.keys().next().value!);
      return found;
    };
    const dirs: { rel: Buffer; entry: Entry }[] = [];
    let rootEntry: Entry | null = null;
    const read: { trailer?: Trailer; sha256?: string } = {};
    try {
      for await (const entry of readManifest(manifest.body, read)) {
        const rel = entryPath(entry);
        while (dirs.length > 0 && !isUnder(dirs[dirs.length - 1]!.rel, rel)) {
          const done = dirs.pop()!;
          await finish(absOf(done.rel), done.entry);
        }
        if (rel.length > 0 && (rel.includes(0) || rel.toString('latin1').split('/').some((n) => n === '' || n === '.' || n === '..'))) {
          throw new ManifestCorrupt(`an entry path that leaves the tree: ${JSON.stringify(rel.toString())}`);
        }
        const abs = absOf(rel);
        if (entry.t === 'd') {
          if (rel.length > 0) mkdirSync(abs, { mode: 0o700 });
          else rootEntry = entry;
          dirs.push({ rel, entry });
        } else if (entry.t === 'f') {
          const target = linkPath(entry);
          if (target) {
            linkSync(absOf(target), abs);
            continue;
          }
          const hashes = entry.h ?? [];
          const size = entry.s ?? 0;
          const fd = openSync(abs, 'w', 0o600);
          if (hashes.length === 0) {
            closeSync(fd);
            await finish(abs, entry);
            continue;
          }
          if (entry.o !== undefined) {
            const packHash = hashes[0]!;
            const packOffset = entry.o;
            await pool.add(async () => {
              let damaged = true;
              try {
                const packed = await getPack(packHash);
                const where = `chunks/${packHash.slice(0, 2)}/${packHash} (${rel.toString()}, packed at byte ${packOffset})`;
                const data = packed?.subarray(packOffset, packOffset + size);
                if (!data) problem('missing', where);
                else if (data.length !== size || createHash('sha256').update(data).digest('hex') !== entry.fh) problem('corrupted', where);
                else {
                  writeSync(fd, data, 0, size, 0);
                  damaged = false;
                }
              } finally {
                closeSync(fd);
                if (!damaged) await finish(abs, entry);
              }
            });
            continue;
          }
          let remaining = hashes.length;
          let damaged = false;
          for (const [index, hash] of hashes.entries()) {
            const offset = index * chunkBytes;
            const length = Math.min(chunkBytes, size - offset);
            await pool.add(async () => {
              const buffer = buffers.pop() ?? Buffer.allocUnsafe(chunkBytes);
              try {
                const got = await this.store.getInto(keys.chunk(hash), buffer);
                const data = buffer.subarray(0, got ?? 0);
                const where = `chunks/${hash.slice(0, 2)}/${hash} (${rel.toString()} at byte ${offset})`;
                if (got === null) {
                  damaged = true;
                  problem('missing', where);
                } else if (got !== length || createHash('sha256').update(data).digest('hex') !== hash) {
                  damaged = true;
                  problem('corrupted', where);
                } else {
                  writeSync(fd, data, 0, data.length, offset);
                }
              } finally {
                buffers.push(buffer);
                if (--remaining === 0) {
                  closeSync(fd);
                  if (!damaged) await finish(abs, entry);
                }
              }
            });
          }
        } else if (entry.t === 'l') {
          symlinkSync(Buffer.from(entry.tg ?? '', 'base64'), abs);
          await finish(abs, entry);
        } else {
          await fsmeta.mknod(abs, (typeBits[entry.t] ?? 0) | entry.m, entry.r ?? 0);
          await finish(abs, entry);
        }
      }
      await pool.drain();
      while (dirs.length > 0) {
        const done = dirs.pop()!;
        await finish(absOf(done.rel), done.entry);
      }
      while (helperWaiting > 0) await new Promise<void>((resolve) => helperIdle.push(resolve));
      if (helperError) throw helperError;
      if (expectedSha && read.sha256 !== expectedSha) {
        throw new ManifestCorrupt(`its sha256 is ${read.sha256}, not ${expectedSha}`);
      }
      if (problems.count > 0) {
        const listed = [...problems.missing.map((m) => `missing ${m}`), ...problems.corrupted.map((c) => `corrupted ${c}`)];
        throw new RoostError(
          'WORKSPACE_UNREADABLE',
          `workspace ${ws} snapshot ${snapshotId} cannot be restored: ${problems.count} chunks missing or corrupt in ${this.where}: ${listed.slice(0, 3).join('; ')}${problems.count > 3 ? '; …' : ''}`,
          { workspace: ws, snapshotId, missing: problems.missing, corrupted: problems.corrupted, count: problems.count },
        );
      }
      await rename(tmp, intoDir);
      // The rename moved the root after its times were set; set them again where it now is.
      if (rootEntry) await fsmeta.setTimes(Buffer.from(intoDir), BigInt(rootEntry.mt));
      return { id: snapshotId, takenAt: snapshotTime(snapshotId), bytes: read.trailer?.bytes ?? 0, files: read.trailer?.files ?? 0 };
    } catch (error) {
      await pool.settle();
      await rm(tmp, { recursive: true, force: true });
      if (error instanceof ManifestCorrupt) {
        throw new RoostError('WORKSPACE_UNREADABLE', `workspace ${ws}: the manifest of snapshot ${snapshotId} is corrupt (${error.message})`, {
          workspace: ws,
          snapshotId,
          corrupted: [manifestKey],
        });
      }
      throw error;
    } finally {
      await fsmeta.close();
    }
  }

  /** Removes the workspace's pointer and manifests (its chunks go with the next gc()). */
  async deleteWorkspace(ws: string): Promise<void> {
    checkWorkspaceId(ws);
    await this.store.delete(keys.head(ws));
    const doomed: string[] = [];
    for await (const object of this.store.list(keys.workspace(ws))) doomed.push(object.key);
    for (let i = 0; i < doomed.length; i += 1000) await this.store.deleteMany(doomed.slice(i, i + 1000));
    const cache = this.cachePaths(ws);
    await rm(cache.manifest, { force: true });
    await rm(cache.meta, { force: true });
  }

  /**
   * Deletes the chunks no manifest references.
   *
   * The rule that keeps a concurrent push safe: a push may rely on a chunk it did not upload
   * itself and that its previous snapshot does not reference (it found the chunk already there,
   * so it skips the upload); if a GC deleted that chunk before the push's manifest names it,
   * the snapshot would be broken. So pushes and GC exclude each other with leases in the bucket:
   * each writes its lease first and then lists the other kind's (S3 lists are strongly
   * consistent, so of two that start together at least one sees the other). A GC that sees a
   * live push lease deletes nothing and reports `deferred`; a push that sees a live GC lease
   * waits for it to end before its first chunk request. Leases are refreshed every TTL/4 and count as dead
   * after the TTL (a crashed holder); a holder whose refreshes stalled past TTL/2 gives up
   * (a push writes no manifest, a GC stops deleting). A push that only reuses chunks of its own
   * previous snapshot takes no lease: GC reads that snapshot's manifest, which is kept until the
   * new one is written, and a GC that finds a manifest it listed gone starts over nothing deleted.
   */
  async gc(): Promise<GcResult> {
    const lease = await Lease.take(this.store, 'gc', this.leaseTtlMs);
    try {
      if ((await Lease.live(this.store, 'push', this.leaseTtlMs)).length > 0) return { deferred: true, deletedChunks: 0, keptChunks: 0 };
      const referenced = new Set<string>();
      for await (const object of this.store.list('workspaces/')) {
        if (!object.key.endsWith('.ndjson.gz')) continue;
        const found = await this.store.getStream(object.key);
        if (!found) return { deferred: true, deletedChunks: 0, keptChunks: 0 }; // pruned meanwhile: start over later
        for await (const entry of readManifest(found.body)) for (const hash of entry.h ?? []) referenced.add(hash);
        lease.check();
      }
      let kept = 0;
      let deleted = 0;
      let batch: string[] = [];
      const flush = async () => {
        lease.check();
        await this.store.deleteMany(batch);
        deleted += batch.length;
        batch = [];
      };
      for await (const object of this.store.list('chunks/')) {
        const hash = basename(object.key);
        if (referenced.has(hash)) kept++;
        else {
          batch.push(object.key);
          if (batch.length === 1000) await flush();
        }
      }
      await flush();
      this.opts.logger?.info({ deletedChunks: deleted, keptChunks: kept }, 'workspace store collected');
      return { deferred: false, deletedChunks: deleted, keptChunks: kept };
    } finally {
      await lease.release();
    }
  }

  close(): void {
    this.store.close();
  }
}
