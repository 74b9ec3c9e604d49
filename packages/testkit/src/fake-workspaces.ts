// A Workspaces for unit tests of core logic, on plain directories in a temp dir: a fork is a
// copy, a snapshot is a copy, usage is a du of the upper dir. It has a pretend store: a sync
// (and the last sync of release) succeeds unless a test made syncs fail (`failSyncs`), and then
// it fails as a real store outage would (the state says since when and why, the local copy
// stays). Disk sizes are recorded, not enforced (info.diskLimits is false). It checks what the
// port asks of its callers: a workspace in use (opened, not released) is forked and synced only
// under a quiesce, and restored never.
import { cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  RoostError, type Quiesce, type WorkspaceMount, type Workspaces, type WorkspaceSnapshot, type WorkspacesInfo, type WorkspaceSyncState,
  type WorkspaceUsage,
} from '@roost/core';

interface FakeWorkspace {
  diskBytes: number | null;
  inUse: boolean;
  snapshots: WorkspaceSnapshot[];
  state: WorkspaceSyncState;
  /** Wall time of the last snapshot the pretend store took (what pendingBytes counts from). */
  syncedWallMs: number | null;
}

export interface FakeWorkspacesOpts {
  /** Where the workspaces live; default a new temp dir that `dispose()` removes. */
  dir?: string;
  /** The clock snapshots and sync states are stamped with (default the wall clock). */
  now?: () => Date;
}

export class FakeWorkspaces implements Workspaces {
  readonly info: WorkspacesInfo = { kind: 'fake', diskLimits: false };
  readonly dir: string;
  private readonly ownsDir: boolean;
  private readonly now: () => Date;
  private readonly workspaces = new Map<string, FakeWorkspace>();
  private syncFailure: string | null = null;
  private nextSnapshot = 1;
  /** Every call that ran a quiesce, in order ("sync ws_…", "fork ws_…"): tests see that core froze. */
  readonly quiesced: string[] = [];
  /** Syncs (and release's last syncs) running now, per workspace, and the most ever at once. */
  private readonly syncing = new Map<string, number>();
  maxConcurrentSyncs = 0;
  /** When set, every sync waits for it before capturing (a test holds syncs open with it). */
  syncGate: Promise<void> | null = null;
  /** Count of syncs started (sync and release), for tests of the periodic sync. */
  syncCount = 0;

  constructor(opts: FakeWorkspacesOpts = {}) {
    this.ownsDir = !opts.dir;
    this.dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'roost-fake-ws-'));
    this.now = opts.now ?? (() => new Date());
  }

  /** Makes every sync (and release) fail with that reason until called with null. */
  failSyncs(reason: string | null): void {
    this.syncFailure = reason;
  }

  /** Overwrites what syncState answers for a workspace (a test's view of a store's state). */
  setSyncState(id: string, state: Partial<WorkspaceSyncState>): void {
    const ws = this.get(id);
    ws.state = { ...ws.state, ...state };
  }

  /** The size recorded for a workspace (create, fork, resize): tests see what core asked. */
  diskBytesOf(id: string): number | null {
    return this.get(id).diskBytes;
  }

  /** Whether the workspace is opened and not released. */
  inUse(id: string): boolean {
    return this.workspaces.get(id)?.inUse ?? false;
  }

  /** The workspace's writable dir (what a sandbox mounting it writes into). */
  upperDir(id: string): string {
    return join(this.dir, 'ws', id, 'upper');
  }

  private snapshotDir(id: string, snapshotId: string): string {
    return join(this.dir, 'snapshots', id, snapshotId);
  }

  private get(id: string): FakeWorkspace {
    const ws = this.workspaces.get(id);
    if (!ws) throw new RoostError('WORKSPACE_NOT_FOUND', `workspace ${id} does not exist`);
    return ws;
  }

  private make(id: string, diskBytes: number | null, from?: string): void {
    if (this.workspaces.has(id) || existsSync(join(this.dir, 'ws', id))) {
      throw new RoostError('WORKSPACE_EXISTS', `workspace ${id} exists`);
    }
    mkdirSync(join(this.dir, 'ws', id, 'work'), { recursive: true });
    if (from) copyTree(from, this.upperDir(id));
    else mkdirSync(this.upperDir(id));
    this.workspaces.set(id, {
      diskBytes,
      inUse: false,
      snapshots: [],
      state: { lastSyncedAt: null, pendingBytes: null, failingSince: null, failure: null },
      syncedWallMs: null,
    });
  }

  async create(id: string, opts: { diskBytes?: number | null; base?: string }): Promise<void> {
    let from: string | undefined;
    if (opts.base !== undefined) {
      const base = this.get(opts.base);
      const latest = base.snapshots.at(-1);
      if (latest) from = this.snapshotDir(opts.base, latest.id);
      else if (!base.inUse) from = this.upperDir(opts.base);
      else throw new RoostError('WORKSPACE_IN_USE', `workspace ${opts.base} is in use and has no snapshot yet to fork from`);
    }
    this.make(id, opts.diskBytes ?? null, from);
  }

  async open(id: string): Promise<WorkspaceMount> {
    const ws = this.get(id);
    ws.inUse = true;
    return { dir: join(this.dir, 'ws', id), lowers: [] };
  }

  async release(id: string): Promise<void> {
    const ws = this.get(id);
    ws.inUse = false;
    await this.capture(id, 'release');
  }

  async fork(from: string, to: string, opts: { quiesce?: Quiesce; diskBytes?: number | null } = {}): Promise<void> {
    const base = this.get(from);
    if (base.inUse && !opts.quiesce) throw new RoostError('WORKSPACE_IN_USE', `workspace ${from} is in use: fork it under a quiesce`);
    if (this.workspaces.has(to)) throw new RoostError('WORKSPACE_EXISTS', `workspace ${to} exists`);
    const copy = () => {
      this.make(to, opts.diskBytes === undefined ? base.diskBytes : opts.diskBytes, this.upperDir(from));
      return Promise.resolve();
    };
    if (opts.quiesce) {
      this.quiesced.push(`fork ${from}`);
      await opts.quiesce(copy);
    } else await copy();
  }

  async sync(id: string, opts: { quiesce?: Quiesce } = {}): Promise<WorkspaceSnapshot> {
    const ws = this.get(id);
    if (ws.inUse && !opts.quiesce) throw new RoostError('WORKSPACE_IN_USE', `workspace ${id} is in use: sync it under a quiesce`);
    return this.capture(id, 'sync', opts.quiesce);
  }

  /** A snapshot (a copy of the upper, taken under the quiesce) "pushed" to the pretend store. */
  private async capture(id: string, why: string, quiesce?: Quiesce): Promise<WorkspaceSnapshot> {
    const ws = this.get(id);
    this.syncCount++;
    const running = (this.syncing.get(id) ?? 0) + 1;
    this.syncing.set(id, running);
    this.maxConcurrentSyncs = Math.max(this.maxConcurrentSyncs, running);
    try {
      if (this.syncGate) await this.syncGate;
      let wallMs = 0;
      const snapshotId = `snap-${String(this.nextSnapshot++).padStart(6, '0')}`;
      const take = () => {
        const takenAt = this.now();
        wallMs = Date.now();
        copyTree(this.upperDir(id), this.snapshotDir(id, snapshotId));
        const { bytes, files } = measure(this.snapshotDir(id, snapshotId));
        return Promise.resolve({ id: snapshotId, takenAt, bytes, files });
      };
      let snapshot: WorkspaceSnapshot;
      if (quiesce) {
        this.quiesced.push(`${why} ${id}`);
        snapshot = await quiesce(take);
      } else snapshot = await take();
      if (this.syncFailure !== null) {
        rmSync(this.snapshotDir(id, snapshotId), { recursive: true, force: true });
        const failure = this.syncFailure;
        ws.state = { ...ws.state, failingSince: ws.state.failingSince ?? this.now(), failure, pendingBytes: this.pending(id) };
        throw new RoostError('WORKSPACE_SYNC_FAILED', `workspace ${id} is not yet safe in the store: ${failure} (the local copy is kept)`);
      }
      ws.snapshots.push(snapshot);
      ws.syncedWallMs = wallMs;
      ws.state = { lastSyncedAt: snapshot.takenAt, pendingBytes: 0, failingSince: null, failure: null };
      return snapshot;
    } finally {
      this.syncing.set(id, (this.syncing.get(id) ?? 1) - 1);
    }
  }

  /** Bytes of files changed since the last snapshot (by mtime), as a store would estimate. */
  private pending(id: string): number | null {
    const last = this.workspaces.get(id)?.syncedWallMs;
    return measure(this.upperDir(id), last ?? undefined).bytes;
  }

  async snapshots(id: string): Promise<WorkspaceSnapshot[]> {
    return [...this.get(id).snapshots];
  }

  async restore(id: string, snapshotId: string): Promise<void> {
    const ws = this.get(id);
    if (ws.inUse) throw new RoostError('WORKSPACE_IN_USE', `workspace ${id} is in use: stop its sandbox first`);
    if (!ws.snapshots.some((s) => s.id === snapshotId)) {
      throw new RoostError('WORKSPACE_SNAPSHOT_NOT_FOUND', `workspace ${id} has no snapshot ${snapshotId}`);
    }
    rmSync(this.upperDir(id), { recursive: true, force: true });
    copyTree(this.snapshotDir(id, snapshotId), this.upperDir(id));
  }

  async resize(id: string, diskBytes: number | null): Promise<void> {
    const ws = this.get(id);
    const used = measure(this.upperDir(id)).bytes;
    if (diskBytes !== null && diskBytes < used) {
      throw new RoostError('DISK_TOO_SMALL', `workspace ${id} uses ${used} bytes, more than ${diskBytes}`);
    }
    ws.diskBytes = diskBytes;
  }

  async usage(id: string): Promise<WorkspaceUsage> {
    const ws = this.get(id);
    return { usedBytes: measure(this.upperDir(id)).bytes, limitBytes: ws.diskBytes };
  }

  async syncState(id: string): Promise<WorkspaceSyncState> {
    const ws = this.get(id);
    if (ws.state.failingSince === null && ws.state.lastSyncedAt !== null) return { ...ws.state, pendingBytes: this.pending(id) };
    return { ...ws.state };
  }

  async delete(id: string): Promise<void> {
    this.workspaces.delete(id);
    rmSync(join(this.dir, 'ws', id), { recursive: true, force: true });
    rmSync(join(this.dir, 'snapshots', id), { recursive: true, force: true });
  }

  async list(): Promise<string[]> {
    return [...this.workspaces.keys()];
  }

  async close(): Promise<void> {}

  /** Removes the temp dir it made (not a dir it was given). */
  dispose(): void {
    if (this.ownsDir) rmSync(this.dir, { recursive: true, force: true });
  }
}

function copyTree(from: string, to: string): void {
  mkdirSync(to, { recursive: true });
  cpSync(from, to, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
}

/** du: bytes of regular files (and files) under dir, optionally only those modified after `sinceMs`. */
function measure(dir: string, sinceMs?: number): { bytes: number; files: number } {
  let bytes = 0;
  let files = 0;
  const walk = (path: string) => {
    for (const entry of readdirSync(path, { withFileTypes: true })) {
      const child = join(path, entry.name);
      if (entry.isDirectory()) walk(child);
      else {
        const stat = lstatSync(child);
        if (sinceMs !== undefined && stat.mtimeMs <= sinceMs) continue;
        files++;
        bytes += stat.size;
      }
    }
  };
  if (existsSync(dir)) walk(dir);
  return { bytes, files };
}
