// The Workspaces port with a store: the local implementation (btrfs pool) holds and mounts the
// workspaces; this wraps it, pushing read-only snapshots to S3 and restoring from there when
// the local copy is missing or older than the store's newest.
import { join } from 'node:path';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import {
  RoostError,
  type Logger,
  type Quiesce,
  type WorkspaceMount,
  type Workspaces,
  type WorkspaceSnapshot,
  type WorkspacesInfo,
  type WorkspaceSyncState,
  type WorkspaceUsage,
} from '@roost/core';
import type { SyncEngine } from './engine.js';

/** A staged empty workspace to restore into (the local adapter's `restoreInto`). */
export interface StagedWorkspace {
  id: string;
  /** Holds `upper/` and `work/`, empty. */
  dir: string;
}

/**
 * What the wrapper needs of the local implementation beyond the port: read-only snapshots it
 * can read from (held while read), and a staged restore swapped in in one step.
 * adapters/workspaces-local's LocalWorkspaces provides these.
 */
export interface LocalWorkspacesForStore extends Workspaces {
  exists(id: string): boolean;
  /** A sandbox has it mounted (open and not released). */
  isOpen(id: string): boolean;
  snapshotDir(id: string, snapshotId: string): string;
  /** Keeps the snapshot from being pruned until the returned function is called. */
  hold(id: string, snapshotId: string): () => void;
  restoreInto(id: string): Promise<StagedWorkspace>;
  commitRestore(staged: StagedWorkspace): Promise<void>;
  abortRestore(staged: StagedWorkspace): Promise<void>;
}

export interface S3WorkspacesOpts {
  local: LocalWorkspacesForStore;
  s3: SyncEngine;
  /** Where it notes which store snapshot each local copy was last pushed as or restored from. */
  stateDir: string;
  logger?: Logger;
}

interface SyncedMarker {
  /** The store's pointer when this host last pushed or restored: a different one means another
   *  host pushed since, and the local copy is behind. */
  knownHead: string;
  /** When that snapshot was taken. */
  takenAt: string;
}

export function openS3Workspaces(opts: S3WorkspacesOpts): S3Workspaces {
  return new S3Workspaces(opts);
}

export class S3Workspaces implements Workspaces {
  readonly info: WorkspacesInfo;
  private readonly local: LocalWorkspacesForStore;
  private readonly s3: SyncEngine;
  private readonly states = new Map<string, WorkspaceSyncState>();

  constructor(private readonly opts: S3WorkspacesOpts) {
    this.local = opts.local;
    this.s3 = opts.s3;
    this.info = { kind: 's3', diskLimits: opts.local.info.diskLimits };
  }

  private markerPath(id: string): string {
    return join(this.opts.stateDir, `${id}.synced.json`);
  }

  private async readMarker(id: string): Promise<SyncedMarker | null> {
    try {
      return JSON.parse(await readFile(this.markerPath(id), 'utf8')) as SyncedMarker;
    } catch {
      return null;
    }
  }

  private async writeMarker(id: string, marker: SyncedMarker): Promise<void> {
    await mkdir(this.opts.stateDir, { recursive: true, mode: 0o700 });
    const path = this.markerPath(id);
    await writeFile(path + '.tmp', JSON.stringify(marker), { mode: 0o600 });
    await rename(path + '.tmp', path);
  }

  private state(id: string): WorkspaceSyncState {
    let state = this.states.get(id);
    if (!state) {
      state = { lastSyncedAt: null, pendingBytes: null, failingSince: null, failure: null };
      this.states.set(id, state);
    }
    return state;
  }

  create(id: string, opts: { diskBytes?: number | null; base?: string }): Promise<void> {
    return this.local.create(id, opts);
  }

  /**
   * Restores from the store when the local copy is missing, or when the store's newest snapshot
   * is not the one the local copy was last pushed as or restored from and is newer than the
   * local copy's last snapshot. With the store down: a local copy opens as it is (logged); a
   * missing one fails WORKSPACE_SYNC_FAILED, never opens empty.
   */
  async open(id: string): Promise<WorkspaceMount> {
    let head: Awaited<ReturnType<SyncEngine['head']>> = null;
    try {
      head = await this.s3.head(id);
    } catch (error) {
      if (!this.local.exists(id)) throw error;
      this.opts.logger?.warn({ workspaceId: id, error: (error as Error).message }, 'workspace store unreachable: opening the local copy as it is');
    }
    if (head) {
      const marker = await this.readMarker(id);
      let stale = !this.local.exists(id);
      if (!stale && marker) stale = marker.knownHead !== head.snapshotId;
      else if (!stale) {
        // No note (its state dir was lost): the newer of the two wins.
        const localSnapshots = await this.local.snapshots(id);
        stale = Date.parse(head.takenAt) > Math.max(0, ...localSnapshots.map((s) => s.takenAt.getTime()));
      }
      if (stale) await this.restoreFromStore(id, head.snapshotId);
      this.state(id).lastSyncedAt ??= new Date(head.takenAt);
    }
    return this.local.open(id);
  }

  private async restoreFromStore(id: string, snapshotId: string): Promise<void> {
    const staged = await this.local.restoreInto(id);
    try {
      const upper = join(staged.dir, 'upper');
      await rm(upper, { recursive: true, force: true }); // the engine makes it, complete or not at all
      const restored = await this.s3.restore(id, upper, { snapshotId });
      await this.local.commitRestore(staged);
      const head = await this.s3.head(id);
      await this.writeMarker(id, { knownHead: head?.snapshotId ?? snapshotId, takenAt: restored.takenAt.toISOString() });
      this.opts.logger?.info({ workspaceId: id, snapshotId, bytes: restored.bytes }, 'workspace restored from the store');
    } catch (error) {
      await this.local.abortRestore(staged).catch(() => {});
      throw error;
    }
  }

  /**
   * Pushes a final snapshot; resolves once the store acknowledged it. The local copy is kept
   * either way; a failure rejects WORKSPACE_SYNC_FAILED saying it is not yet safe there.
   */
  async release(id: string): Promise<void> {
    await this.local.release(id);
    try {
      await this.sync(id);
    } catch (error) {
      const reason = (error as Error).message;
      throw new RoostError('WORKSPACE_SYNC_FAILED', `workspace ${id} is not yet safe in the store (the local copy is kept): ${reason}`, {
        workspaceId: id,
        reason,
      });
    }
  }

  fork(from: string, to: string, opts?: { quiesce?: Quiesce; diskBytes?: number | null }): Promise<void> {
    return this.local.fork(from, to, opts);
  }

  /** A local snapshot (under `quiesce`), then a push from it; resolves once the store has it. */
  async sync(id: string, opts: { quiesce?: Quiesce } = {}): Promise<WorkspaceSnapshot> {
    const state = this.state(id);
    const local = await this.local.sync(id, opts); // its refusals (in use, not found) are no sync failure
    const unhold = this.local.hold(id, local.id);
    try {
      const pushed = await this.s3.push(join(this.local.snapshotDir(id, local.id), 'upper'), id);
      await this.writeMarker(id, { knownHead: pushed.snapshot.id, takenAt: pushed.snapshot.takenAt.toISOString() });
      state.lastSyncedAt = pushed.snapshot.takenAt;
      state.pendingBytes = 0;
      state.failingSince = null;
      state.failure = null;
      return pushed.snapshot;
    } catch (error) {
      state.failingSince ??= new Date();
      state.failure = (error as Error).message;
      throw error;
    } finally {
      unhold();
    }
  }

  /** The store's snapshots, oldest first (those of a workspace not here yet too). */
  async snapshots(id: string): Promise<WorkspaceSnapshot[]> {
    const found = await this.s3.snapshots(id);
    if (found.length === 0 && !this.local.exists(id)) throw new RoostError('WORKSPACE_NOT_FOUND', `workspace ${id} does not exist`, { workspaceId: id });
    return found;
  }

  /** Replaces the workspace's state with that store snapshot's (not in use). */
  async restore(id: string, snapshotId: string): Promise<void> {
    // Refused before anything is downloaded (commitRestore would refuse it after).
    if (this.local.isOpen(id)) throw new RoostError('WORKSPACE_IN_USE', `workspace ${id} is in use by a sandbox: stop it before restoring a snapshot`, { workspaceId: id });
    await this.restoreFromStore(id, snapshotId);
  }

  resize(id: string, diskBytes: number | null): Promise<void> {
    return this.local.resize(id, diskBytes);
  }

  usage(id: string): Promise<WorkspaceUsage> {
    return this.local.usage(id);
  }

  async syncState(id: string): Promise<WorkspaceSyncState> {
    return { ...this.state(id) };
  }

  /** Removes it here and in the store (its chunks go with the next GC). Idempotent. */
  async delete(id: string): Promise<void> {
    await this.local.delete(id);
    await this.s3.deleteWorkspace(id);
    await rm(this.markerPath(id), { force: true });
    this.states.delete(id);
  }

  list(): Promise<string[]> {
    return this.local.list();
  }

  async close(): Promise<void> {
    await this.local.close();
    this.s3.close();
  }
}
