// Workspaces as their owners see them: names, sizes, forks, snapshots and syncs, over the
// Workspaces port (the files) and the Store (the records). The rules (docs/workspaces.md):
// - a workspace is mounted by at most one live sandbox (the store's index has the last word);
// - anything that captures a running sandbox's workspace (sync, fork) does it under a quiesce
//   that freezes the sandbox and always thaws it, so the capture is one point in time;
// - per workspace, one thing at a time: syncs, the final sync of a release and the next open
//   queue behind each other, so a next run never mounts what a previous one still has mounted;
// - a running sandbox's workspace is synced every `syncIntervalMs` (the Clock drives it); a round
//   is skipped while the previous one is still going; failures are kept for status.
import { RoostError } from './errors.js';
import { assertValidWorkspaceName, isWorkspaceId } from './names.js';
import type {
  Clock,
  Logger,
  Quiesce,
  Runtime,
  SandboxRecord,
  Store,
  WorkspaceHoldings,
  WorkspaceMount,
  WorkspaceRecord,
  Workspaces,
  WorkspaceSnapshot,
  WorkspaceSyncState,
  WorkspaceUsage,
} from './ports.js';

/** Per-user limits on workspaces; absent: none. */
export interface WorkspaceQuota {
  workspaces: number;
  /** Sum of the sizes (`--disk`) of a user's workspaces. */
  diskBytes: number;
}

export interface WorkspaceServiceDeps {
  store: Store;
  workspaces: Workspaces;
  runtime: Runtime;
  clock: Clock;
  logger: Logger;
  newId(prefix: string): string;
  /** How often a running sandbox's workspace is synced; 0: only on stop and `roost sync`. */
  syncIntervalMs: number;
  quota?: WorkspaceQuota;
}

/** A workspace with what it takes and where it stands with the store, for list and status. */
export interface WorkspaceView {
  record: WorkspaceRecord;
  usage: WorkspaceUsage;
  sync: WorkspaceSyncState;
  /** The sandbox that mounts it (live) or will at its next start (stopped); null: none. */
  usedBy: Pick<SandboxRecord, 'id' | 'name' | 'status'> | null;
}

export interface WorkspaceOpts {
  /** Enforced size in bytes (null: none). */
  diskBytes?: number | null;
  /** Name or id of the workspace to fork it from (its latest snapshot). */
  base?: string;
}

export class WorkspaceService {
  /** The last thing queued per workspace (sync, release, open, fork): the next waits for it. */
  private readonly queues = new Map<string, Promise<unknown>>();
  /** Syncs running now (periodic ones skip a round while one is). */
  private readonly syncing = new Set<string>();
  /** The last failure of core's own sync attempts (the port keeps its own too). */
  private readonly failures = new Map<string, { since: Date; reason: string }>();
  /** Periodic sync timers, per sandbox. */
  private readonly timers = new Map<string, { cancel(): void }>();
  private closed = false;

  constructor(private readonly deps: WorkspaceServiceDeps) {}

  get info() {
    return this.deps.workspaces.info;
  }

  /** By id or name; another owner's is not found. */
  async get(ownerId: string, ref: string): Promise<WorkspaceRecord> {
    const { store } = this.deps;
    const record = isWorkspaceId(ref) ? await store.getWorkspace(ref) : await store.workspaceNamed(ownerId, ref);
    if (!record || record.ownerId !== ownerId) throw new RoostError('WORKSPACE_NOT_FOUND', `no workspace named or with id "${ref}"`);
    return record;
  }

  async create(ownerId: string, name: string, opts: WorkspaceOpts = {}): Promise<WorkspaceRecord> {
    const { store, workspaces, clock, newId, quota } = this.deps;
    assertValidWorkspaceName(name);
    assertDiskBytes(opts.diskBytes);
    const base = opts.base !== undefined ? await this.get(ownerId, opts.base) : undefined;
    const now = clock.now();
    const record: WorkspaceRecord = {
      id: newId('ws'),
      ownerId,
      name,
      diskBytes: opts.diskBytes ?? null,
      baseId: base?.id ?? null,
      createdAt: now,
      updatedAt: now,
      lastUsedAt: null,
    };
    await store.insertWorkspace(record, quota && ((held) => admitWorkspace(quota, held, record.diskBytes ?? 0)));
    try {
      // A base in use forks from its latest snapshot (the port's rule); queued behind its syncs.
      const make = () => workspaces.create(record.id, { diskBytes: record.diskBytes, base: base?.id });
      await (base ? this.serial(base.id, make) : make());
    } catch (error) {
      await store.deleteWorkspace(record.id).catch(() => {});
      throw error;
    }
    this.deps.logger.info({ workspaceId: record.id, ownerId, name, baseId: record.baseId, diskBytes: record.diskBytes }, 'workspace created');
    return record;
  }

  /**
   * The owner's workspace of that name (or id), made on first use. `base` only makes a new one:
   * for an existing workspace it is refused, never silently ignored; `diskBytes` resizes one.
   */
  async ensure(ownerId: string, ref: string, opts: WorkspaceOpts = {}): Promise<{ record: WorkspaceRecord; created: boolean }> {
    let record: WorkspaceRecord | undefined;
    try {
      record = await this.get(ownerId, ref);
    } catch (error) {
      if (!(error instanceof RoostError && error.code === 'WORKSPACE_NOT_FOUND') || isWorkspaceId(ref)) throw error;
    }
    if (!record) {
      try {
        return { record: await this.create(ownerId, ref, opts), created: true };
      } catch (error) {
        // Another request made it meanwhile (two first runs at once): use that one.
        if (!(error instanceof RoostError && error.code === 'WORKSPACE_NAME_TAKEN') || opts.base !== undefined) throw error;
        record = await this.get(ownerId, ref);
      }
    }
    if (opts.base !== undefined) {
      throw new RoostError('WORKSPACE_NAME_TAKEN', `workspace ${record.name} exists: --base only makes a new workspace (use another name, or leave out --base)`);
    }
    if (opts.diskBytes !== undefined && opts.diskBytes !== record.diskBytes) record = await this.resize(record, opts.diskBytes);
    return { record, created: false };
  }

  async list(ownerId: string): Promise<WorkspaceView[]> {
    return Promise.all((await this.deps.store.listWorkspaces(ownerId)).map((record) => this.view(record)));
  }

  async show(ownerId: string, ref: string): Promise<WorkspaceView> {
    return this.view(await this.get(ownerId, ref));
  }

  async view(record: WorkspaceRecord): Promise<WorkspaceView> {
    const { workspaces, store } = this.deps;
    const [usage, sync, users] = await Promise.all([workspaces.usage(record.id), workspaces.syncState(record.id), store.sandboxesUsingWorkspace(record.id)]);
    const own = this.failures.get(record.id);
    const merged: WorkspaceSyncState = {
      ...sync,
      failingSince: sync.failingSince ?? own?.since ?? null,
      failure: sync.failure ?? own?.reason ?? null,
    };
    const user = users[0];
    return { record, usage, sync: merged, usedBy: user ? { id: user.id, name: user.name, status: user.status } : null };
  }

  /** Removes it here and in the store; refused while a sandbox (live or stopped) uses it. */
  async remove(ownerId: string, ref: string): Promise<WorkspaceRecord> {
    const record = await this.get(ownerId, ref);
    // The store refuses in the same transaction that would delete: no run can take it between.
    await this.deps.store.deleteWorkspace(record.id);
    await this.serial(record.id, () => this.deps.workspaces.delete(record.id));
    this.failures.delete(record.id);
    this.deps.logger.info({ workspaceId: record.id, name: record.name }, 'workspace removed');
    return record;
  }

  /**
   * A new workspace `newName` holding `ref`'s state now. A running sandbox's workspace is
   * captured under a quiesce (the sandbox frozen), so a file written just before is in the child;
   * one whose sandbox is starting is refused rather than taken from an unknown state.
   */
  async fork(ownerId: string, ref: string, newName: string, opts: { diskBytes?: number | null } = {}): Promise<WorkspaceRecord> {
    const { store, workspaces, clock, newId, quota } = this.deps;
    const from = await this.get(ownerId, ref);
    assertValidWorkspaceName(newName);
    assertDiskBytes(opts.diskBytes);
    const now = clock.now();
    const record: WorkspaceRecord = {
      id: newId('ws'),
      ownerId,
      name: newName,
      diskBytes: opts.diskBytes === undefined ? from.diskBytes : opts.diskBytes,
      baseId: from.id,
      createdAt: now,
      updatedAt: now,
      lastUsedAt: null,
    };
    await store.insertWorkspace(record, quota && ((held) => admitWorkspace(quota, held, record.diskBytes ?? 0)));
    try {
      await this.serial(from.id, async () => {
        const live = (await store.sandboxesUsingWorkspace(from.id)).find((sandbox) => sandbox.status !== 'stopped');
        if (live && live.status !== 'running') {
          throw new RoostError('WORKSPACE_IN_USE', `workspace ${from.name} is used by sandbox ${live.name}, which is ${live.status}: fork it once it runs or after it stopped`);
        }
        await workspaces.fork(from.id, record.id, { diskBytes: record.diskBytes, ...(live && { quiesce: this.quiesceFor(live.id) }) });
      });
    } catch (error) {
      await store.deleteWorkspace(record.id).catch(() => {});
      throw error;
    }
    this.deps.logger.info({ workspaceId: record.id, from: from.id, name: newName }, 'workspace forked');
    return record;
  }

  async snapshots(ownerId: string, ref: string): Promise<{ record: WorkspaceRecord; snapshots: WorkspaceSnapshot[] }> {
    const record = await this.get(ownerId, ref);
    return { record, snapshots: await this.deps.workspaces.snapshots(record.id) };
  }

  /** Puts the workspace back to one of its snapshots; refused while a live sandbox mounts it. */
  async restore(ownerId: string, ref: string, snapshotId: string): Promise<WorkspaceRecord> {
    const record = await this.get(ownerId, ref);
    await this.serial(record.id, async () => {
      const live = (await this.deps.store.sandboxesUsingWorkspace(record.id)).find((sandbox) => sandbox.status !== 'stopped');
      if (live) {
        throw new RoostError('WORKSPACE_IN_USE', `workspace ${record.name} is in use by sandbox ${live.name} (${live.id}, ${live.status}): stop it first`, { sandboxId: live.id });
      }
      await this.deps.workspaces.restore(record.id, snapshotId);
    });
    this.deps.logger.info({ workspaceId: record.id, snapshotId }, 'workspace restored');
    return record;
  }

  async resize(record: WorkspaceRecord, diskBytes: number | null): Promise<WorkspaceRecord> {
    const { store, workspaces, clock, quota } = this.deps;
    assertDiskBytes(diskBytes);
    if (quota && diskBytes !== null) {
      const others = (await store.listWorkspaces(record.ownerId)).filter((ws) => ws.id !== record.id);
      admitWorkspace(quota, { workspaces: others.length, diskBytes: others.reduce((sum, ws) => sum + (ws.diskBytes ?? 0), 0) }, diskBytes);
    }
    await workspaces.resize(record.id, diskBytes);
    await store.updateWorkspace(record.id, { diskBytes }, clock.now());
    this.deps.logger.info({ workspaceId: record.id, diskBytes }, 'workspace resized');
    return { ...record, diskBytes, updatedAt: clock.now() };
  }

  /** Freezes the sandbox around a capture and always thaws it, also when the capture fails. */
  quiesceFor(sandboxId: string): Quiesce {
    const { runtime } = this.deps;
    return async (capture) => {
      await runtime.freeze(sandboxId);
      try {
        return await capture();
      } finally {
        await runtime.thaw(sandboxId);
      }
    };
  }

  /** Takes a snapshot now (a running sandbox frozen around it) and pushes it; queued behind any other. */
  async sync(workspaceId: string, sandboxId: string | null): Promise<WorkspaceSnapshot> {
    return this.serial(workspaceId, () => this.syncNow(workspaceId, sandboxId));
  }

  private async syncNow(workspaceId: string, sandboxId: string | null): Promise<WorkspaceSnapshot> {
    this.syncing.add(workspaceId);
    try {
      const snapshot = await this.deps.workspaces.sync(workspaceId, sandboxId ? { quiesce: this.quiesceFor(sandboxId) } : {});
      this.failures.delete(workspaceId);
      return snapshot;
    } catch (error) {
      this.noteFailure(workspaceId, error);
      throw error;
    } finally {
      this.syncing.delete(workspaceId);
    }
  }

  private noteFailure(workspaceId: string, error: unknown): void {
    const reason = error instanceof Error ? error.message : String(error);
    const since = this.failures.get(workspaceId)?.since ?? this.deps.clock.now();
    this.failures.set(workspaceId, { since, reason });
    this.deps.logger.warn({ workspaceId, err: reason }, 'workspace sync failed');
  }

  /** Ready to mount, once whatever is queued for it (a previous sandbox's release) is done. */
  async open(record: WorkspaceRecord): Promise<WorkspaceMount> {
    const mount = await this.serial(record.id, () => this.deps.workspaces.open(record.id));
    await this.deps.store.updateWorkspace(record.id, { lastUsedAt: this.deps.clock.now() }, this.deps.clock.now());
    return mount;
  }

  /**
   * The sandbox that mounted it goes: `teardown` (the runtime's destroy) runs first, then the
   * final sync of the port's release. Queued at once, so a next open waits for both. Resolves
   * with null once the store has it, or with why it is not yet safe there (the local copy is
   * kept, the failure stays for status).
   */
  detach(workspaceId: string, sandboxId: string, teardown: () => Promise<void>): Promise<string | null> {
    this.stopSyncing(sandboxId);
    return this.serial(workspaceId, async () => {
      await teardown();
      try {
        await this.deps.workspaces.release(workspaceId);
        this.failures.delete(workspaceId);
        return null;
      } catch (error) {
        this.noteFailure(workspaceId, error);
        return `workspace not yet safe in the store: ${error instanceof Error ? error.message : String(error)}`;
      }
    });
  }

  /** Syncs the sandbox's workspace every `syncIntervalMs` until `stopSyncing` (or stop/detach). */
  startSyncing(sandboxId: string, workspaceId: string): void {
    const { syncIntervalMs, clock, logger } = this.deps;
    if (syncIntervalMs <= 0 || this.closed) return;
    this.stopSyncing(sandboxId);
    const schedule = () => {
      this.timers.set(
        sandboxId,
        clock.setTimeout(() => {
          // Never two at once: a round that finds one going (manual, or a slow previous round) is skipped.
          if (this.syncing.has(workspaceId) || this.queues.has(workspaceId)) {
            schedule();
            return;
          }
          this.sync(workspaceId, sandboxId)
            .catch((error: unknown) => logger.debug({ sandboxId, workspaceId, err: String(error) }, 'periodic sync failed'))
            .finally(() => {
              if (this.timers.has(sandboxId)) schedule();
            });
        }, syncIntervalMs),
      );
    };
    schedule();
  }

  stopSyncing(sandboxId: string): void {
    this.timers.get(sandboxId)?.cancel();
    this.timers.delete(sandboxId);
  }

  /** Resolves once nothing is queued for any workspace (shutdown, tests). */
  async settle(): Promise<void> {
    while (this.queues.size > 0) await Promise.allSettled([...this.queues.values()]);
  }

  /** Stops the periodic syncs and waits for what is going. */
  async close(): Promise<void> {
    this.closed = true;
    for (const sandboxId of [...this.timers.keys()]) this.stopSyncing(sandboxId);
    await this.settle();
  }

  /** Runs `fn` after everything queued for the workspace before it (failures included). */
  private serial<T>(workspaceId: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.queues.get(workspaceId) ?? Promise.resolve();
    const next = previous.catch(() => {}).then(fn);
    const tail = next.catch(() => {});
    this.queues.set(workspaceId, tail);
    void tail.then(() => {
      if (this.queues.get(workspaceId) === tail) this.queues.delete(workspaceId);
    });
    return next;
  }
}

/** `--disk` in bytes: a whole positive number, or null for none. */
function assertDiskBytes(diskBytes: number | null | undefined): void {
  if (diskBytes === undefined || diskBytes === null) return;
  if (!Number.isSafeInteger(diskBytes) || diskBytes <= 0) throw new RoostError('VALIDATION_FAILED', `a disk size must be a positive number of bytes, not ${diskBytes}`);
}

/** Refuses a workspace that would take its owner past the workspace quota. */
export function admitWorkspace(quota: WorkspaceQuota, held: WorkspaceHoldings, askBytes: number): void {
  const over: string[] = [];
  if (held.workspaces + 1 > quota.workspaces) over.push(`workspaces: ${held.workspaces} of ${quota.workspaces} in use; this would be one more`);
  if (held.diskBytes + askBytes > quota.diskBytes) {
    over.push(`disk: ${formatGb(held.diskBytes)} of ${formatGb(quota.diskBytes)} given to your workspaces; this asks ${formatGb(askBytes)}`);
  }
  if (over.length > 0) throw new RoostError('QUOTA_EXCEEDED', `over your quota: ${over.join('; ')}`);
}

function formatGb(bytes: number): string {
  return `${+(bytes / 1e9).toFixed(3)} GB`;
}
