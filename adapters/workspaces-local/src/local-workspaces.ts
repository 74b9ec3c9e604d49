// The Workspaces port on this host's disk: one btrfs subvolume per workspace in the pool
// (pool.ts), read-only btrfs snapshots for sync/fork/restore, qgroup limits for --disk.
//
// Layout under the pool root (docs/workspaces.md, "Pool layout"):
//   ws/<id>/            the workspace (a subvolume): upper/ and work/ for the sandbox's overlay
//   snaps/<id>/<snap>   its read-only snapshots, oldest first by name
//   tmp/                subvolumes being made or swapped; what a crash left is settled at open
//   open/<id>           present while a sandbox has it mounted (survives a roostd restart)
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { RoostError } from '@roost/core';
import type {
  Logger, Quiesce, WorkspaceMount, Workspaces, WorkspacesInfo, WorkspaceSnapshot, WorkspaceSyncState, WorkspaceUsage,
} from '@roost/core';
import { SHIFT_BASE } from '@roost/runtime-oci';
import {
  createSubvolume, deleteSubvolume, isSubvolume, qgroupSizes, setReferencedLimit, snapshotSubvolume,
} from './btrfs.js';
import { closePool, openPool, poolProblems, type Pool } from './pool.js';

export interface LocalWorkspacesOpts {
  /** roostd's data dir: the pool is <dataDir>/workspaces (a loop-mounted <dataDir>/workspaces.btrfs unless the dir is btrfs). */
  dataDir: string;
  /** Size of the pool file when it is made (default 20 GiB). */
  poolBytes?: number;
  /** Local snapshots kept per workspace (default 5); older ones are deleted after each sync. */
  keepSnapshots?: number;
  logger: Logger;
  /** Owner of upper/ (the sandbox's root as stored on disk; default runtime-oci's SHIFT_BASE). */
  canonicalRootId?: number;
}

export const DEFAULT_POOL_BYTES = 20 * 1024 ** 3;
/**
 * What a full workspace gets above its use while mounted: overlayfs writes to work/ at mount,
 * and btrfs refuses even a mkdir at the qgroup limit (measured: 256 KiB was enough; 4 MiB
 * leaves room for the sandbox to remove files, which needs metadata space too).
 */
export const MOUNT_HEADROOM_BYTES = 4 * 1024 * 1024;

/** open/<id>: who opened it, and the limit to put back when open() lifted it. */
interface OpenMarker {
  pid?: number;
  raisedFrom?: number | null;
}
export const DEFAULT_KEEP_SNAPSHOTS = 5;

/** Workspace and snapshot ids become path names: nothing that could climb out or hide. */
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const SNAP_RE = /^s(\d{13})-(\d{3})$/;
const MAKING = '@making-';
const NEW = '@new';
const OLD = '@old';
const DELETING = '@deleting-';

/** A staged subvolume to restore into (restoreInto / commitRestore). */
export interface StagedWorkspace {
  id: string;
  /** Write the restored upper/ and work/ here (they exist, empty, owned canonically). */
  dir: string;
}

function checkId(id: string, what = 'workspace id'): void {
  if (!ID_RE.test(id)) throw new RoostError('VALIDATION_FAILED', `invalid ${what} "${id}"`);
}

function notFound(id: string): RoostError {
  return new RoostError('WORKSPACE_NOT_FOUND', `workspace ${id} does not exist`, { workspaceId: id });
}

function inUse(id: string, what: string): RoostError {
  return new RoostError('WORKSPACE_IN_USE', `workspace ${id} is in use by a sandbox: ${what}`, { workspaceId: id });
}

function snapTime(snapId: string): Date {
  const m = SNAP_RE.exec(snapId);
  return new Date(m ? Number(m[1]) : 0);
}

export class LocalWorkspaces implements Workspaces {
  readonly info: WorkspacesInfo = { kind: 'local', diskLimits: true };
  private readonly log: Logger;
  private readonly keep: number;
  private readonly rootId: number;
  /** One change at a time per workspace. */
  private readonly busy = new Map<string, Promise<unknown>>();
  private lastSnapMs = 0;
  private lastSnapSeq = 0;
  private closed = false;

  private constructor(readonly pool: Pool, opts: LocalWorkspacesOpts) {
    this.log = opts.logger;
    this.keep = Math.max(1, opts.keepSnapshots ?? DEFAULT_KEEP_SNAPSHOTS);
    this.rootId = opts.canonicalRootId ?? SHIFT_BASE;
  }

  static async open(opts: LocalWorkspacesOpts): Promise<LocalWorkspaces> {
    let pool: Pool;
    try {
      pool = await openPool({ dataDir: opts.dataDir, poolBytes: opts.poolBytes ?? DEFAULT_POOL_BYTES, logger: opts.logger });
    } catch (error) {
      // Say what to do: the same problems `roost doctor` lists.
      const fixes = (await poolProblems(opts.dataDir).catch(() => [])).map((p) => `${p.problem}; fix: ${p.fix}`);
      throw new Error(`the workspace pool cannot be opened: ${(error as Error).message}${fixes.length ? ` (${fixes.join('; ')})` : ''}`, { cause: error });
    }
    const ws = new LocalWorkspaces(pool, opts);
    try {
      await ws.settle();
    } catch (error) {
      await closePool(pool, opts.logger).catch(() => {});
      throw error;
    }
    return ws;
  }

  // -- pool path helpers (also for adapters/workspaces-s3) -------------------------------------

  /** The workspace's subvolume (holds upper/ and work/). */
  workspaceDir(id: string): string {
    checkId(id);
    return path.join(this.pool.root, 'ws', id);
  }

  /** Where the workspace's read-only snapshots are. */
  snapshotsDir(id: string): string {
    checkId(id);
    return path.join(this.pool.root, 'snaps', id);
  }

  /** A read-only snapshot's dir (its upper/ is what a store uploads). */
  snapshotDir(id: string, snapshotId: string): string {
    checkId(snapshotId, 'snapshot id');
    return path.join(this.snapshotsDir(id), snapshotId);
  }

  private tmp(name: string): string {
    return path.join(this.pool.root, 'tmp', name);
  }

  private openMarker(id: string): string {
    return path.join(this.pool.root, 'open', id);
  }

  exists(id: string): boolean {
    return existsSync(this.workspaceDir(id));
  }

  isOpen(id: string): boolean {
    return existsSync(this.openMarker(id));
  }

  /**
   * What a crash left: half-made subvolumes are removed, a restore whose new state was complete
   * is finished, one that was not is rolled back; snapshots of workspaces that are gone go too.
   */
  private async settle(): Promise<void> {
    for (const d of ['ws', 'snaps', 'tmp', 'open']) await fs.mkdir(path.join(this.pool.root, d), { recursive: true, mode: 0o711 });
    const tmpEntries = await fs.readdir(path.join(this.pool.root, 'tmp'));
    // Swaps first: a complete @new whose workspace is missing is rolled forward.
    for (const name of tmpEntries.filter((n) => n.endsWith(NEW))) {
      const id = name.slice(0, -NEW.length);
      if (!ID_RE.test(id)) continue;
      if (!existsSync(this.workspaceDir(id))) {
        await fs.rename(this.tmp(name), this.workspaceDir(id));
        this.log.warn({ workspaceId: id }, 'workspace restore finished after a crash');
      }
    }
    for (const name of tmpEntries.filter((n) => n.endsWith(OLD))) {
      const id = name.slice(0, -OLD.length);
      if (ID_RE.test(id) && !existsSync(this.workspaceDir(id))) {
        await fs.rename(this.tmp(name), this.workspaceDir(id));
        this.log.warn({ workspaceId: id }, 'workspace restore rolled back after a crash');
      }
    }
    for (const name of await fs.readdir(path.join(this.pool.root, 'tmp'))) {
      await this.removeTree(this.tmp(name));
      this.log.warn({ what: name }, 'removed a half-made workspace subvolume left by a crash');
    }
    for (const id of await fs.readdir(path.join(this.pool.root, 'snaps'))) {
      if (!existsSync(path.join(this.pool.root, 'ws', id))) {
        await this.removeSnapshots(id);
        this.log.warn({ workspaceId: id }, 'removed snapshots of a workspace that is gone');
      }
    }
    for (const id of await fs.readdir(path.join(this.pool.root, 'open'))) {
      if (!existsSync(path.join(this.pool.root, 'ws', id))) await fs.rm(this.openMarker(id), { force: true });
    }
  }

  /** A subvolume (and any subvolumes under it), or a plain dir. */
  private async removeTree(dir: string): Promise<void> {
    if (!existsSync(dir)) return;
    if (await isSubvolume(dir)) {
      // Nested subvolumes would make the delete fail: none are made by us, but a sandbox's
      // root could have made one inside upper/ (btrfs subvolume create needs CAP_SYS_ADMIN on
      // the host, which a sandbox lacks; this is belt and braces).
      await deleteSubvolume(dir);
    } else {
      await fs.rm(dir, { recursive: true, force: true });
    }
  }

  private async removeSnapshots(id: string): Promise<void> {
    const dir = path.join(this.pool.root, 'snaps', id);
    for (const name of await fs.readdir(dir).catch(() => [] as string[])) await this.removeTree(path.join(dir, name));
    await fs.rm(dir, { recursive: true, force: true });
  }

  private serial<T>(id: string, fn: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new Error('the workspace pool is closed'));
    const prev = this.busy.get(id) ?? Promise.resolve();
    const next = prev.catch(() => {}).then(fn);
    this.busy.set(id, next);
    next.finally(() => this.busy.get(id) === next && this.busy.delete(id)).catch(() => {});
    return next;
  }

  private mustExist(id: string): void {
    if (!this.exists(id)) throw notFound(id);
  }

  /** Snapshot ids of `id`, oldest first. */
  private async snapshotIds(id: string): Promise<string[]> {
    const names = await fs.readdir(this.snapshotsDir(id)).catch(() => [] as string[]);
    return names.filter((n) => SNAP_RE.test(n)).sort();
  }

  /** A new snapshot id, later than every one before (ms time and a sequence within the ms). */
  private nextSnapshotId(): string {
    const now = Date.now();
    if (now > this.lastSnapMs) {
      this.lastSnapMs = now;
      this.lastSnapSeq = 0;
    } else {
      this.lastSnapSeq++;
    }
    return `s${String(this.lastSnapMs).padStart(13, '0')}-${String(this.lastSnapSeq).padStart(3, '0')}`;
  }

  /** Makes a subvolume at `dir` (a temporary name), either empty with upper/ and work/ or a writable snapshot of `from`. */
  private async makeSubvolume(dir: string, from?: string): Promise<void> {
    if (from) {
      await snapshotSubvolume(from, dir, false);
      // Snapshots inherit the source's limit; the caller sets the one wanted.
      if ((await qgroupSizes(dir, { sync: false })).referencedLimitBytes !== null) await setReferencedLimit(dir, null);
      return;
    }
    await createSubvolume(dir);
    for (const d of ['upper', 'work']) {
      await fs.mkdir(path.join(dir, d), { mode: 0o755 });
      // The overlay's root takes upper/'s owner: root of the sandbox, as stored on disk.
      await fs.chown(path.join(dir, d), this.rootId, this.rootId);
    }
  }

  private tmpName(id: string): string {
    return `${id}${MAKING}${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  }

  /** Makes a workspace from `source` (or empty) under a temporary name, then renames it into place. */
  private async materialize(id: string, diskBytes: number | null | undefined, source?: string): Promise<void> {
    const staging = this.tmp(this.tmpName(id));
    try {
      await this.makeSubvolume(staging, source);
      if (diskBytes != null) await setReferencedLimit(staging, diskBytes);
      if (this.exists(id)) throw new RoostError('WORKSPACE_EXISTS', `workspace ${id} already exists`, { workspaceId: id });
      await fs.rename(staging, this.workspaceDir(id));
    } catch (error) {
      await this.removeTree(staging).catch((e: Error) => this.log.error({ workspaceId: id, error: e.message }, 'cannot remove a half-made workspace'));
      throw error;
    }
  }

  // -- the port -------------------------------------------------------------------------------

  create(id: string, opts: { diskBytes?: number | null; base?: string }): Promise<void> {
    checkId(id);
    if (opts.base !== undefined) checkId(opts.base, 'base workspace id');
    if (opts.base === id) return Promise.reject(notFound(id));
    return this.serial(id, async () => {
      if (this.exists(id)) throw new RoostError('WORKSPACE_EXISTS', `workspace ${id} already exists`, { workspaceId: id });
      const t0 = performance.now();
      let source: string | undefined;
      if (opts.base !== undefined) {
        const base = opts.base;
        source = await this.serial(base, async () => {
          this.mustExist(base);
          const latest = (await this.snapshotIds(base)).at(-1);
          if (latest) return this.snapshotDir(base, latest);
          if (this.isOpen(base)) {
            throw inUse(base, 'it has no snapshot yet to fork from; sync it first (roost sync) or fork it with roost workspace fork');
          }
          return this.workspaceDir(base);
        });
      }
      await this.materialize(id, opts.diskBytes, source);
      this.log.info({ workspaceId: id, base: opts.base, diskBytes: opts.diskBytes ?? null, ms: +(performance.now() - t0).toFixed(1) }, 'workspace created');
    });
  }

  open(id: string): Promise<WorkspaceMount> {
    checkId(id);
    return this.serial(id, async () => {
      this.mustExist(id);
      const marker: OpenMarker = { ...(await this.readMarker(id)), pid: process.pid };
      const dir = this.workspaceDir(id);
      const q = await qgroupSizes(dir, { sync: false });
      if (q.referencedLimitBytes !== null && marker.raisedFrom === undefined) {
        // Mounting writes to work/ (overlayfs makes work/work): a workspace filled to its limit
        // would come up read-only, and its sandbox could not even remove files. Such a one gets
        // MOUNT_HEADROOM_BYTES above what it uses while mounted; release() puts the limit back.
        const used = (await qgroupSizes(dir)).referencedBytes;
        if (used + MOUNT_HEADROOM_BYTES > q.referencedLimitBytes) {
          marker.raisedFrom = q.referencedLimitBytes;
          await this.writeMarker(id, marker);
          await setReferencedLimit(dir, used + MOUNT_HEADROOM_BYTES);
          this.log.warn({ workspaceId: id, usedBytes: used, limitBytes: q.referencedLimitBytes, headroomBytes: MOUNT_HEADROOM_BYTES }, 'workspace is full: its limit is lifted a little while mounted, so its sandbox starts writable and can remove files');
        }
      }
      await this.writeMarker(id, marker);
      return { dir, lowers: [] };
    });
  }

  release(id: string): Promise<void> {
    checkId(id);
    return this.serial(id, async () => {
      const marker = await this.readMarker(id);
      if (marker.raisedFrom !== undefined && this.exists(id)) await setReferencedLimit(this.workspaceDir(id), marker.raisedFrom);
      await fs.rm(this.openMarker(id), { force: true });
    });
  }

  private async readMarker(id: string): Promise<OpenMarker> {
    const text = await fs.readFile(this.openMarker(id), 'utf8').catch(() => '');
    try {
      const parsed = JSON.parse(text) as OpenMarker;
      return typeof parsed === 'object' && parsed ? parsed : {};
    } catch {
      return {};
    }
  }

  private async writeMarker(id: string, marker: OpenMarker): Promise<void> {
    // Renamed into place: a crash never leaves a marker that lost the limit to put back.
    const tmp = `${this.openMarker(id)}.tmp`;
    try {
      await fs.writeFile(tmp, JSON.stringify(marker));
    } catch (error) {
      // Never leave the temp file: close() would take it for a workspace in use.
      await fs.rm(tmp, { force: true }).catch(() => {});
      // A full pool (ENOSPC) has no data space left for these few bytes, but metadata space for
      // an empty file (found by workspaces-durability.e2e): the marker then records only that
      // the workspace is open, so its sandbox still starts and can remove files. A limit to put
      // back (raisedFrom) must not be lost: that one fails.
      if ((error as NodeJS.ErrnoException).code !== 'ENOSPC' || marker.raisedFrom !== undefined) throw error;
      await fs.writeFile(tmp, '');
      this.log.warn({ workspaceId: id, root: this.pool.root }, 'the workspace pool is full: its sandbox starts, but writes fail until files are removed');
    }
    await fs.rename(tmp, this.openMarker(id));
  }

  /** The size set with create/fork/resize (not the headroom open may add while mounted). */
  private async configuredLimit(id: string): Promise<number | null> {
    const marker = await this.readMarker(id);
    if (marker.raisedFrom !== undefined) return marker.raisedFrom;
    return (await qgroupSizes(this.workspaceDir(id), { sync: false })).referencedLimitBytes;
  }

  fork(from: string, to: string, opts: { quiesce?: Quiesce; diskBytes?: number | null } = {}): Promise<void> {
    checkId(from);
    checkId(to);
    if (from === to) return Promise.reject(new RoostError('WORKSPACE_EXISTS', `workspace ${to} already exists`, { workspaceId: to }));
    return this.serial(to, async () => {
      if (this.exists(to)) throw new RoostError('WORKSPACE_EXISTS', `workspace ${to} already exists`, { workspaceId: to });
      const t0 = performance.now();
      await this.serial(from, async () => {
        this.mustExist(from);
        if (this.isOpen(from) && !opts.quiesce) {
          throw inUse(from, 'a fork needs its sandbox paused for a moment; fork through the sandbox (roost workspace fork) so it can be');
        }
        const staging = this.tmp(this.tmpName(to));
        // The snapshot inherits the base's limit: set one only when another is asked for.
        const baseLimit = (await qgroupSizes(this.workspaceDir(from), { sync: false })).referencedLimitBytes;
        const raisedFrom = (await this.readMarker(from)).raisedFrom;
        const limit = opts.diskBytes !== undefined ? opts.diskBytes : raisedFrom !== undefined ? raisedFrom : baseLimit;
        try {
          const snap = () => snapshotSubvolume(this.workspaceDir(from), staging, false);
          // btrfs writes the subvolume's dirty pages into the snapshot: what was written before
          // the freeze is in it.
          if (opts.quiesce) await opts.quiesce(snap);
          else await snap();
          if (limit !== baseLimit) await setReferencedLimit(staging, limit);
          await fs.rename(staging, this.workspaceDir(to));
        } catch (error) {
          await this.removeTree(staging).catch(() => {});
          throw error;
        }
      });
      this.log.info({ workspaceId: to, from, ms: +(performance.now() - t0).toFixed(1) }, 'workspace forked');
    });
  }

  sync(id: string, opts: { quiesce?: Quiesce } = {}): Promise<WorkspaceSnapshot> {
    checkId(id);
    return this.serial(id, async () => {
      this.mustExist(id);
      // Without its sandbox paused the snapshot would not be one point in time.
      if (this.isOpen(id) && !opts.quiesce) throw inUse(id, 'sync it through its sandbox (roost sync), which pauses it for the snapshot');
      const { snapshotId } = await this.takeSnapshot(id, opts.quiesce);
      return this.describeSnapshot(id, snapshotId);
    });
  }

  /**
   * A read-only snapshot of the workspace now (under `quiesce` when given), then the oldest
   * beyond keepSnapshots deleted. Not serialized: callers hold the workspace's turn.
   */
  async takeSnapshot(id: string, quiesce?: Quiesce): Promise<{ snapshotId: string; dir: string; ms: number }> {
    this.mustExist(id);
    await fs.mkdir(this.snapshotsDir(id), { recursive: true, mode: 0o711 });
    const snapshotId = this.nextSnapshotId();
    const dir = this.snapshotDir(id, snapshotId);
    const t0 = performance.now();
    const snap = () => snapshotSubvolume(this.workspaceDir(id), dir, true);
    if (quiesce) await quiesce(snap);
    else await snap();
    const ms = +(performance.now() - t0).toFixed(1);
    // The snapshot inherited the workspace's limit (a read-only one never grows, but a restore
    // or fork made from it must not start with a stale one).
    if ((await qgroupSizes(dir, { sync: false }).catch(() => undefined))?.referencedLimitBytes != null) await setReferencedLimit(dir, null).catch(() => {});
    const ids = await this.snapshotIds(id);
    for (const old of ids.slice(0, Math.max(0, ids.length - this.keep))) {
      // One a store is still reading stays until it lets go (a later sync prunes it).
      if (this.held.has(`${id}/${old}`)) continue;
      await this.removeTree(this.snapshotDir(id, old));
      await fs.rm(path.join(this.snapshotsDir(id), `.${old}.json`), { force: true });
    }
    this.log.debug({ workspaceId: id, snapshotId, ms }, 'workspace snapshot taken');
    return { snapshotId, dir, ms };
  }

  /** Bytes and files of a snapshot's upper/ (kept beside it once counted: snapshots never change). */
  private async describeSnapshot(id: string, snapshotId: string): Promise<WorkspaceSnapshot> {
    const dir = this.snapshotDir(id, snapshotId);
    const cache = path.join(this.snapshotsDir(id), `.${snapshotId}.json`);
    const cached = await fs.readFile(cache, 'utf8').then((t) => JSON.parse(t) as { bytes: number; files: number }).catch(() => undefined);
    const counted = cached ?? (await countTree(path.join(dir, 'upper')));
    if (!cached) await fs.writeFile(cache, JSON.stringify(counted)).catch(() => {});
    return { id: snapshotId, takenAt: snapTime(snapshotId), ...counted };
  }

  snapshots(id: string): Promise<WorkspaceSnapshot[]> {
    checkId(id);
    return this.serial(id, async () => {
      this.mustExist(id);
      const out: WorkspaceSnapshot[] = [];
      for (const s of await this.snapshotIds(id)) out.push(await this.describeSnapshot(id, s));
      return out;
    });
  }

  restore(id: string, snapshotId: string): Promise<void> {
    checkId(id);
    checkId(snapshotId, 'snapshot id');
    return this.serial(id, async () => {
      this.mustExist(id);
      if (this.isOpen(id)) throw inUse(id, 'stop its sandbox before restoring a snapshot');
      const snap = this.snapshotDir(id, snapshotId);
      if (!existsSync(snap)) {
        throw new RoostError('WORKSPACE_SNAPSHOT_NOT_FOUND', `workspace ${id} has no snapshot ${snapshotId}`, { workspaceId: id, snapshotId });
      }
      const staged = await this.stage(id, snap);
      await this.swapIn(staged);
      this.log.info({ workspaceId: id, snapshotId }, 'workspace restored from a snapshot');
    });
  }

  /** A new subvolume under a temporary name, from `from` or empty, with the workspace's current limit. */
  private async stage(id: string, from?: string): Promise<StagedWorkspace> {
    const dir = this.tmp(this.tmpName(id));
    try {
      await this.makeSubvolume(dir, from);
      const limit = this.exists(id) ? await this.configuredLimit(id) : null;
      if (limit !== null) await setReferencedLimit(dir, limit);
    } catch (error) {
      await this.removeTree(dir).catch(() => {});
      throw error;
    }
    return { id, dir };
  }

  /**
   * Replaces the workspace with a staged subvolume. Two renames, made safe by their names: the
   * staged one becomes tmp/<id>@new (complete) before the old one moves to tmp/<id>@old, so
   * a crash in between is finished by settle() at the next open.
   */
  private async swapIn(staged: StagedWorkspace): Promise<void> {
    const { id } = staged;
    const ready = this.tmp(`${id}${NEW}`);
    const old = this.tmp(`${id}${OLD}`);
    await fs.rename(staged.dir, ready);
    if (this.exists(id)) await fs.rename(this.workspaceDir(id), old);
    await fs.rename(ready, this.workspaceDir(id));
    await this.removeTree(old);
  }

  /**
   * For a store's restore: a new empty subvolume (upper/ and work/ made) to fill, which
   * commitRestore swaps in for the workspace (or makes it, when it is not here) in one step.
   * abortRestore drops it. The workspace must not be in use when committing.
   */
  restoreInto(id: string): Promise<StagedWorkspace> {
    checkId(id);
    return this.serial(id, () => this.stage(id));
  }

  commitRestore(staged: StagedWorkspace): Promise<void> {
    return this.serial(staged.id, async () => {
      if (this.isOpen(staged.id)) throw inUse(staged.id, 'stop its sandbox before restoring');
      await this.swapIn(staged);
    });
  }

  abortRestore(staged: StagedWorkspace): Promise<void> {
    return this.removeTree(staged.dir);
  }

  /** Snapshots being read (uploaded) now, with how many holds each: never pruned meanwhile. */
  private readonly held = new Map<string, number>();

  /**
   * Keeps a snapshot from being pruned by later syncs until the returned function is called
   * (a store uploading from snapshotDir). Idempotent release.
   */
  hold(id: string, snapshotId: string): () => void {
    const key = `${id}/${snapshotId}`;
    this.held.set(key, (this.held.get(key) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.held.get(key) ?? 1) - 1;
      if (left > 0) this.held.set(key, left);
      else this.held.delete(key);
    };
  }

  /** Newest local snapshot, if any (for a store to upload). */
  async latestSnapshot(id: string): Promise<{ id: string; dir: string; takenAt: Date } | undefined> {
    const latest = (await this.snapshotIds(id)).at(-1);
    return latest ? { id: latest, dir: this.snapshotDir(id, latest), takenAt: snapTime(latest) } : undefined;
  }

  resize(id: string, diskBytes: number | null): Promise<void> {
    checkId(id);
    if (diskBytes !== null && (!Number.isSafeInteger(diskBytes) || diskBytes <= 0)) {
      return Promise.reject(new RoostError('VALIDATION_FAILED', `disk size ${diskBytes} is not a positive number of bytes`));
    }
    return this.serial(id, async () => {
      this.mustExist(id);
      const dir = this.workspaceDir(id);
      if (diskBytes !== null) {
        const used = (await qgroupSizes(dir)).referencedBytes;
        if (diskBytes < used) {
          throw new RoostError('DISK_TOO_SMALL', `workspace ${id} already uses ${used} bytes, more than ${diskBytes}`, { workspaceId: id, usedBytes: used });
        }
      }
      await setReferencedLimit(dir, diskBytes);
      // A new size replaces the headroom open() may have given a full workspace.
      const marker = await this.readMarker(id);
      if (marker.raisedFrom !== undefined) {
        delete marker.raisedFrom;
        await this.writeMarker(id, marker);
      }
      this.log.info({ workspaceId: id, diskBytes }, 'workspace resized');
    });
  }

  usage(id: string): Promise<WorkspaceUsage> {
    checkId(id);
    return this.serial(id, async () => {
      this.mustExist(id);
      const q = await qgroupSizes(this.workspaceDir(id));
      const raisedFrom = (await this.readMarker(id)).raisedFrom;
      return { usedBytes: q.referencedBytes, limitBytes: raisedFrom !== undefined ? raisedFrom : q.referencedLimitBytes };
    });
  }

  syncState(id: string): Promise<WorkspaceSyncState> {
    checkId(id);
    return this.serial(id, async () => {
      this.mustExist(id);
      const latest = (await this.snapshotIds(id)).at(-1);
      // No store: a local snapshot is as synced as it gets.
      return { lastSyncedAt: latest ? snapTime(latest) : null, pendingBytes: null, failingSince: null, failure: null };
    });
  }

  delete(id: string): Promise<void> {
    checkId(id);
    return this.serial(id, async () => {
      if (this.isOpen(id)) throw inUse(id, 'remove its sandbox first');
      if (this.exists(id)) {
        // Renamed out first: a crash midway leaves a tmp/ entry that the next open removes,
        // never a workspace that is half there.
        const doomed = this.tmp(`${id}${DELETING}${process.pid}`);
        await fs.rename(this.workspaceDir(id), doomed);
        await this.removeTree(doomed);
      }
      await this.removeSnapshots(id);
      this.log.info({ workspaceId: id }, 'workspace deleted');
    });
  }

  async list(): Promise<string[]> {
    const names = await fs.readdir(path.join(this.pool.root, 'ws')).catch(() => [] as string[]);
    return names.filter((n) => ID_RE.test(n)).sort();
  }

  /** Waits for running changes; unmounts a loop pool when no workspace is in use (the next open mounts it again). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.busy.values()]);
    const openIds = (await fs.readdir(path.join(this.pool.root, 'open')).catch(() => [] as string[])).filter((n) => !n.endsWith('.tmp'));
    // A busy unmount (a shell cd'd into the pool) must not fail roostd's stop: the next start adopts the mount.
    if (openIds.length === 0) await closePool(this.pool, this.log).catch((error: Error) => this.log.error({ root: this.pool.root, error: error.message }, 'workspace pool left mounted'));
  }
}

/** Bytes of regular files and count of non-directories under `dir` (an explicit stack: no recursion depth limit to hit). */
async function countTree(dir: string): Promise<{ bytes: number; files: number }> {
  let bytes = 0;
  let files = 0;
  const stack = [dir];
  while (stack.length) {
    const d = stack.pop()!;
    const entries = await fs.readdir(d, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) {
        stack.push(p);
        continue;
      }
      files++;
      if (e.isFile()) bytes += (await fs.lstat(p)).size;
    }
  }
  return { bytes, files };
}

/** The local Workspaces (roostd's factory). */
export function openLocalWorkspaces(opts: LocalWorkspacesOpts): Promise<LocalWorkspaces> {
  return LocalWorkspaces.open(opts);
}
