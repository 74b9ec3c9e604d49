// The Store port on embedded SQLite, through kysely's typed queries.
import Database from 'better-sqlite3';
import { Kysely, Migrator, sql, SqliteDialect, type Generated, type MigrationProvider, type Transaction } from 'kysely';
import {
  nameHoldingStatuses,
  RoostError,
  type EndedRun,
  type IdRangeAllocation,
  type SandboxGuard,
  type LogChunk,
  type QuotaChange,
  type QuotaLimits,
  type QuotaOverrides,
  type UserUsage,
  type SandboxPatch,
  type SandboxRecord,
  type NetworkMode,
  type SandboxStatus,
  type EgressRules,
  type SshKeyRecord,
  type Store,
  type TokenRecord,
  type UserRecord,
  type WorkspaceHoldings,
  type WorkspacePatch,
  type WorkspaceRecord,
} from '@roost/core';
import { migrations } from './migrations.js';

interface Tables {
  users: { id: string; name: string; is_admin: number; created_at: string; log_bytes: Generated<number> };
  tokens: {
    id: string;
    user_id: string;
    token_hash: string;
    description: string;
    created_at: string;
    last_used_at: string | null;
  };
  sandboxes: {
    id: string;
    owner_id: string;
    name: string;
    image: string;
    status: string;
    persistent: number;
    cpus: number;
    memory_mb: number;
    pids_limit: number;
    open_files: number;
    network: string;
    ssh_agent_forwarding: number;
    default_user: string;
    env_json: string;
    /** JSON EgressRules */
    egress_rules: string;
    exit_code: number | null;
    status_reason: string | null;
    log_bytes: number;
    log_trimmed_bytes: number;
    workspace_id: string | null;
    created_at: string;
    updated_at: string;
  };
  workspaces: {
    id: string;
    owner_id: string;
    name: string;
    disk_bytes: number | null;
    base_id: string | null;
    created_at: string;
    updated_at: string;
    last_used_at: string | null;
  };
  user_quotas: {
    user_id: string;
    sandboxes: number | null;
    cpus: number | null;
    memory_mb: number | null;
    pids: number | null;
    timeout_sec: number | null;
    log_bytes: number | null;
    updated_at: string;
  };
  ssh_keys: {
    id: string;
    user_id: string;
    name: string;
    type: string;
    public_key: string;
    fingerprint: string;
    created_at: string;
    last_used_at: string | null;
  };
  run_logs: { sandbox_id: string; seq: number; stream: string; data: Uint8Array };
  id_ranges: { id_range: number; holder_id: string; allocated_at: string };
  kysely_migration: { name: string; timestamp: Generated<string> };
}

type SandboxRow = Tables['sandboxes'];

export interface SqliteStoreOpts {
  /** File path, or ":memory:" for tests. */
  path: string;
}

export async function openSqliteStore(opts: SqliteStoreOpts): Promise<Store> {
  const database = new Database(opts.path);
  database.pragma('journal_mode = WAL');
  database.pragma('synchronous = NORMAL');
  database.pragma('foreign_keys = ON');
  database.pragma('busy_timeout = 5000');
  const db = new Kysely<Tables>({ dialect: new SqliteDialect({ database }) });
  const provider: MigrationProvider = { getMigrations: async () => migrations };
  const { error } = await new Migrator({ db, provider }).migrateToLatest();
  if (error) {
    await db.destroy();
    throw new Error(`could not migrate the SQLite store at ${opts.path}: ${(error as Error).message}`);
  }
  return new SqliteStore(db);
}

class SqliteStore implements Store {
  constructor(private readonly db: Kysely<Tables>) {}

  async createUser(user: UserRecord): Promise<void> {
    await this.db
      .insertInto('users')
      .values({ id: user.id, name: user.name, is_admin: user.isAdmin ? 1 : 0, created_at: user.createdAt.toISOString() })
      .execute();
  }

  async getUser(id: string): Promise<UserRecord | undefined> {
    const row = await this.db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst();
    return row && toUser(row);
  }

  async getUserByName(name: string): Promise<UserRecord | undefined> {
    const row = await this.db.selectFrom('users').selectAll().where('name', '=', name).executeTakeFirst();
    return row && toUser(row);
  }

  async createToken(token: TokenRecord): Promise<void> {
    await this.db
      .insertInto('tokens')
      .values({
        id: token.id,
        user_id: token.userId,
        token_hash: token.tokenHash,
        description: token.description,
        created_at: token.createdAt.toISOString(),
        last_used_at: token.lastUsedAt?.toISOString() ?? null,
      })
      .execute();
  }

  async findTokenByHash(tokenHash: string): Promise<TokenRecord | undefined> {
    const row = await this.db.selectFrom('tokens').selectAll().where('token_hash', '=', tokenHash).executeTakeFirst();
    return (
      row && {
        id: row.id,
        userId: row.user_id,
        tokenHash: row.token_hash,
        description: row.description,
        createdAt: new Date(row.created_at),
        lastUsedAt: row.last_used_at ? new Date(row.last_used_at) : null,
      }
    );
  }

  async touchToken(id: string, at: Date): Promise<void> {
    await this.db.updateTable('tokens').set({ last_used_at: at.toISOString() }).where('id', '=', id).execute();
  }

  async insertSshKey(key: SshKeyRecord): Promise<void> {
    try {
      await this.db
        .insertInto('ssh_keys')
        .values({
          id: key.id,
          user_id: key.userId,
          name: key.name,
          type: key.type,
          public_key: key.publicKey,
          fingerprint: key.fingerprint,
          created_at: key.createdAt.toISOString(),
          last_used_at: key.lastUsedAt?.toISOString() ?? null,
        })
        .execute();
    } catch (error) {
      if ((error as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE') {
        throw new RoostError('SSH_KEY_TAKEN', `the key ${key.fingerprint} is already registered`);
      }
      throw error;
    }
  }

  async listSshKeys(userId: string): Promise<SshKeyRecord[]> {
    const rows = await this.db.selectFrom('ssh_keys').selectAll().where('user_id', '=', userId).orderBy('created_at').execute();
    return rows.map(toSshKey);
  }

  async getSshKeyByFingerprint(fingerprint: string): Promise<SshKeyRecord | undefined> {
    const row = await this.db.selectFrom('ssh_keys').selectAll().where('fingerprint', '=', fingerprint).executeTakeFirst();
    return row && toSshKey(row);
  }

  async deleteSshKey(id: string): Promise<void> {
    await this.db.deleteFrom('ssh_keys').where('id', '=', id).execute();
  }

  async touchSshKey(id: string, at: Date): Promise<void> {
    await this.db.updateTable('ssh_keys').set({ last_used_at: at.toISOString() }).where('id', '=', id).execute();
  }

  async insertSandbox(sandbox: SandboxRecord, admit?: (usage: UserUsage) => void): Promise<void> {
    try {
      // better-sqlite3 has one connection and kysely holds it for the whole transaction, so no
      // other insert can come between the count and this one.
      await this.db.transaction().execute(async (trx) => {
        if (admit) admit(await usageOf(trx, sandbox.ownerId));
        await trx.insertInto('sandboxes').values(toRow(sandbox)).execute();
      });
    } catch (error) {
      if (sandbox.workspaceId) await this.throwIfWorkspaceTaken(error, sandbox.workspaceId);
      if ((error as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE') {
        throw new RoostError('SANDBOX_NAME_TAKEN', `you already have a sandbox named "${sandbox.name}" (live or stopped)`);
      }
      throw error;
    }
  }

  async getSandbox(id: string): Promise<SandboxRecord | undefined> {
    const row = await this.db.selectFrom('sandboxes').selectAll().where('id', '=', id).executeTakeFirst();
    return row && toSandbox(row);
  }

  async sandboxesNamed(ownerId: string, name: string): Promise<SandboxRecord[]> {
    const rows = await this.db
      .selectFrom('sandboxes')
      .selectAll()
      .where('owner_id', '=', ownerId)
      .where('name', '=', name)
      .orderBy((eb) => eb.case().when('status', 'in', [...nameHoldingStatuses]).then(0).else(1).end())
      .orderBy('created_at', 'desc')
      .orderBy('id')
      .execute();
    return rows.map(toSandbox);
  }

  async listEndedRuns(ownerId: string): Promise<EndedRun[]> {
    const rows = await this.db
      .selectFrom('sandboxes')
      .select(['id', 'name', 'log_bytes', 'created_at'])
      .where('owner_id', '=', ownerId)
      .where('status', 'in', ['completed', 'error'])
      .orderBy('created_at', 'desc')
      .orderBy('id', 'desc')
      .execute();
    return rows.map((row) => ({ id: row.id, name: row.name, logBytes: row.log_bytes, createdAt: new Date(row.created_at) }));
  }

  async listSandboxes(filter: { ownerId?: string }): Promise<SandboxRecord[]> {
    let query = this.db.selectFrom('sandboxes').selectAll().orderBy('created_at', 'desc').orderBy('id');
    if (filter.ownerId) query = query.where('owner_id', '=', filter.ownerId);
    return (await query.execute()).map(toSandbox);
  }

  async updateSandbox(id: string, patch: SandboxPatch, at: Date, guard: SandboxGuard = {}): Promise<boolean> {
    try {
      // Most updates (status changes of a run) need no transaction of their own.
      if (!guard.fromStatuses && !guard.admit) return (await this.applyPatch(this.db, id, patch, at)) > 0;
      return await this.db.transaction().execute(async (trx) => {
        const row = await trx.selectFrom('sandboxes').select(['status', 'owner_id']).where('id', '=', id).executeTakeFirst();
        if (!row) return false;
        if (guard.fromStatuses && !guard.fromStatuses.includes(row.status as SandboxStatus)) return false;
        if (guard.admit) guard.admit(await usageOf(trx, row.owner_id));
        return (await this.applyPatch(trx, id, patch, at)) > 0;
      });
    } catch (error) {
      const workspaceId = (await this.db.selectFrom('sandboxes').select('workspace_id').where('id', '=', id).executeTakeFirst())?.workspace_id;
      if (workspaceId) await this.throwIfWorkspaceTaken(error, workspaceId);
      if ((error as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE') {
        throw new RoostError('SANDBOX_NAME_TAKEN', 'another of your sandboxes has taken its name meanwhile');
      }
      throw error;
    }
  }

  private async applyPatch(trx: Kysely<Tables> | Transaction<Tables>, id: string, patch: SandboxPatch, at: Date): Promise<number> {
    const result = await trx
      .updateTable('sandboxes')
      .set({
        ...(patch.status !== undefined && { status: patch.status }),
        ...(patch.limits !== undefined && {
          cpus: patch.limits.cpus,
          memory_mb: patch.limits.memoryMb,
          pids_limit: patch.limits.pids,
          open_files: patch.limits.openFiles,
        }),
        ...(patch.sshAgentForwarding !== undefined && { ssh_agent_forwarding: patch.sshAgentForwarding ? 1 : 0 }),
        ...(patch.defaultUser !== undefined && { default_user: patch.defaultUser }),
        ...(patch.egress !== undefined && { egress_rules: JSON.stringify(patch.egress) }),
        ...(patch.exitCode !== undefined && { exit_code: patch.exitCode }),
        ...(patch.statusReason !== undefined && { status_reason: patch.statusReason }),
        ...(patch.workspaceId !== undefined && { workspace_id: patch.workspaceId }),
        updated_at: at.toISOString(),
      })
      .where('id', '=', id)
      .executeTakeFirst();
    return Number(result.numUpdatedRows);
  }

  async deleteSandbox(id: string, guard: Pick<SandboxGuard, 'fromStatuses'> = {}): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      if (guard.fromStatuses) {
        const row = await trx.selectFrom('sandboxes').select('status').where('id', '=', id).executeTakeFirst();
        if (!row || !guard.fromStatuses.includes(row.status as SandboxStatus)) return false;
      }
      await forgetLogBytes(trx, id);
      const result = await trx.deleteFrom('sandboxes').where('id', '=', id).executeTakeFirst();
      return Number(result.numDeletedRows) > 0;
    });
  }

  /** A unique-index failure on the live-workspace index becomes WORKSPACE_IN_USE naming the sandbox that has it. */
  private async throwIfWorkspaceTaken(error: unknown, workspaceId: string): Promise<void> {
    if ((error as { code?: string }).code !== 'SQLITE_CONSTRAINT_UNIQUE' || !/workspace_id/.test((error as Error).message)) return;
    const [holder] = await this.sandboxesUsingWorkspace(workspaceId);
    const workspace = await this.getWorkspace(workspaceId);
    throw new RoostError(
      'WORKSPACE_IN_USE',
      `workspace ${workspace?.name ?? workspaceId} is in use by sandbox ${holder ? `${holder.name} (${holder.id}, ${holder.status})` : 'another sandbox'}`,
      { sandboxId: holder?.id },
    );
  }

  async insertWorkspace(workspace: WorkspaceRecord, admit?: (held: WorkspaceHoldings) => void): Promise<void> {
    try {
      await this.db.transaction().execute(async (trx) => {
        if (admit) {
          const row = await trx
            .selectFrom('workspaces')
            .select([sql<number>`COUNT(*)`.as('count'), sql<number>`COALESCE(SUM(disk_bytes), 0)`.as('bytes')])
            .where('owner_id', '=', workspace.ownerId)
            .executeTakeFirstOrThrow();
          admit({ workspaces: row.count, diskBytes: row.bytes });
        }
        await trx.insertInto('workspaces').values(toWorkspaceRow(workspace)).execute();
      });
    } catch (error) {
      if ((error as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE' || (error as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
        throw new RoostError('WORKSPACE_NAME_TAKEN', `you already have a workspace named "${workspace.name}"`);
      }
      throw error;
    }
  }

  async getWorkspace(id: string): Promise<WorkspaceRecord | undefined> {
    const row = await this.db.selectFrom('workspaces').selectAll().where('id', '=', id).executeTakeFirst();
    return row && toWorkspace(row);
  }

  async workspaceNamed(ownerId: string, name: string): Promise<WorkspaceRecord | undefined> {
    const row = await this.db.selectFrom('workspaces').selectAll().where('owner_id', '=', ownerId).where('name', '=', name).executeTakeFirst();
    return row && toWorkspace(row);
  }

  async listWorkspaces(ownerId: string): Promise<WorkspaceRecord[]> {
    const rows = await this.db.selectFrom('workspaces').selectAll().where('owner_id', '=', ownerId).orderBy('created_at', 'desc').orderBy('id').execute();
    return rows.map(toWorkspace);
  }

  async updateWorkspace(id: string, patch: WorkspacePatch, at: Date): Promise<boolean> {
    const result = await this.db
      .updateTable('workspaces')
      .set({
        ...(patch.diskBytes !== undefined && { disk_bytes: patch.diskBytes }),
        ...(patch.lastUsedAt !== undefined && { last_used_at: patch.lastUsedAt.toISOString() }),
        updated_at: at.toISOString(),
      })
      .where('id', '=', id)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  async deleteWorkspace(id: string): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      const holder = await trx
        .selectFrom('sandboxes')
        .select(['id', 'name', 'status'])
        .where('workspace_id', '=', id)
        .where('status', 'in', [...nameHoldingStatuses])
        .executeTakeFirst();
      if (holder) {
        const name = (await trx.selectFrom('workspaces').select('name').where('id', '=', id).executeTakeFirst())?.name ?? id;
        throw new RoostError('WORKSPACE_IN_USE', `workspace ${name} is in use by sandbox ${holder.name} (${holder.id}, ${holder.status})`, { sandboxId: holder.id });
      }
      const result = await trx.deleteFrom('workspaces').where('id', '=', id).executeTakeFirst();
      return Number(result.numDeletedRows) > 0;
    });
  }

  async sandboxesUsingWorkspace(workspaceId: string): Promise<SandboxRecord[]> {
    const rows = await this.db
      .selectFrom('sandboxes')
      .selectAll()
      .where('workspace_id', '=', workspaceId)
      .where('status', 'in', [...nameHoldingStatuses])
      .orderBy((eb) => eb.case().when('status', '=', 'stopped').then(1).else(0).end())
      .orderBy('created_at', 'desc')
      .execute();
    return rows.map(toSandbox);
  }

  async allocateIdRange(holderId: string): Promise<number> {
    // One statement, so atomic: the lowest index no one holds (0, or one past a held index
    // whose successor is free). A holder that has one keeps it (ON CONFLICT). The WHERE true
    // is SQLite's way to tell an upsert's ON from a join's.
    await sql`INSERT INTO id_ranges (id_range, holder_id, allocated_at)
              SELECT MIN(free), ${holderId}, ${new Date().toISOString()} FROM (
                SELECT 0 AS free WHERE NOT EXISTS (SELECT 1 FROM id_ranges WHERE id_range = 0)
                UNION ALL
                SELECT id_range + 1 FROM id_ranges held
                 WHERE NOT EXISTS (SELECT 1 FROM id_ranges next WHERE next.id_range = held.id_range + 1)
              ) WHERE true
              ON CONFLICT (holder_id) DO NOTHING`.execute(this.db);
    const row = await this.db.selectFrom('id_ranges').select('id_range').where('holder_id', '=', holderId).executeTakeFirstOrThrow();
    return row.id_range;
  }

  async releaseIdRange(holderId: string): Promise<void> {
    await this.db.deleteFrom('id_ranges').where('holder_id', '=', holderId).execute();
  }

  async listIdRanges(): Promise<IdRangeAllocation[]> {
    const rows = await this.db.selectFrom('id_ranges').select(['holder_id', 'id_range']).orderBy('id_range').execute();
    return rows.map((row) => ({ holderId: row.holder_id, idRange: row.id_range }));
  }

  async appendLog(sandboxId: string, chunk: LogChunk): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      await trx.insertInto('run_logs').values({ sandbox_id: sandboxId, seq: chunk.seq, stream: chunk.stream, data: chunk.data }).execute();
      await trx
        .updateTable('sandboxes')
        .set((eb) => ({ log_bytes: eb('log_bytes', '+', chunk.data.length) }))
        .where('id', '=', sandboxId)
        .execute();
      await trx
        .updateTable('users')
        .set((eb) => ({ log_bytes: eb('log_bytes', '+', chunk.data.length) }))
        .where('id', '=', (eb) => eb.selectFrom('sandboxes').select('owner_id').where('id', '=', sandboxId))
        .execute();
    });
  }

  async readLogs(sandboxId: string, afterSeq: number, limit: number): Promise<LogChunk[]> {
    const rows = await this.db
      .selectFrom('run_logs')
      .select(['seq', 'stream', 'data'])
      .where('sandbox_id', '=', sandboxId)
      .where('seq', '>', afterSeq)
      .orderBy('seq')
      .limit(limit)
      .execute();
    return rows.map((row) => ({ seq: row.seq, stream: row.stream as LogChunk['stream'], data: row.data }));
  }

  async deleteLogs(sandboxId: string): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      await trx.deleteFrom('run_logs').where('sandbox_id', '=', sandboxId).execute();
      await forgetLogBytes(trx, sandboxId);
    });
  }

  async trimLogs(ownerId: string, maxBytes: number): Promise<number> {
    return this.db.transaction().execute(async (trx) => {
      const owner = await trx.selectFrom('users').select('log_bytes').where('id', '=', ownerId).executeTakeFirst();
      let excess = (owner?.log_bytes ?? 0) - maxBytes;
      let removed = 0;
      while (excess > 0) {
        const oldest = await trx
          .selectFrom('sandboxes')
          .select(['id', 'log_bytes'])
          .where('owner_id', '=', ownerId)
          // A literal, not a parameter: only then can SQLite use the partial index on it.
          .where(sql<boolean>`log_bytes > 0`)
          // rowid is insertion order: it tells apart sandboxes made in the same millisecond.
          .orderBy('created_at')
          .orderBy(sql`rowid`)
          .limit(1)
          .executeTakeFirst();
        if (!oldest) break;
        const chunks = await trx
          .selectFrom('run_logs')
          .select((eb) => ['seq', eb.fn<number>('length', ['data']).as('bytes')])
          .where('sandbox_id', '=', oldest.id)
          .orderBy('seq')
          .limit(256)
          .execute();
        let trimmed = 0;
        let lastWhole: number | undefined;
        for (const chunk of chunks) {
          if (chunk.bytes <= excess) {
            lastWhole = chunk.seq;
            excess -= chunk.bytes;
            trimmed += chunk.bytes;
            continue;
          }
          // The boundary chunk keeps its tail: the newest output stays.
          await trx
            .updateTable('run_logs')
            .set({ data: sql<Uint8Array>`substr(data, ${excess + 1})` })
            .where('sandbox_id', '=', oldest.id)
            .where('seq', '=', chunk.seq)
            .execute();
          trimmed += excess;
          excess = 0;
          break;
        }
        if (lastWhole !== undefined) {
          await trx.deleteFrom('run_logs').where('sandbox_id', '=', oldest.id).where('seq', '<=', lastWhole).execute();
        }
        if (chunks.length === 0) {
          // A count that disagrees with its chunks (none left) is set right, not looped on.
          await forgetLogBytes(trx, oldest.id);
          excess -= oldest.log_bytes;
          continue;
        }
        await trx
          .updateTable('sandboxes')
          .set((eb) => ({ log_bytes: eb('log_bytes', '-', trimmed), log_trimmed_bytes: eb('log_trimmed_bytes', '+', trimmed) }))
          .where('id', '=', oldest.id)
          .execute();
        removed += trimmed;
      }
      await trx
        .updateTable('users')
        .set((eb) => ({ log_bytes: eb('log_bytes', '-', removed) }))
        .where('id', '=', ownerId)
        .execute();
      return removed;
    });
  }

  async usageOf(userId: string): Promise<UserUsage> {
    return usageOf(this.db, userId);
  }

  async getQuotaOverrides(userId: string): Promise<QuotaOverrides> {
    return quotaOverridesOf(this.db, userId);
  }

  async changeQuotaOverrides(userId: string, change: QuotaChange, at: Date): Promise<QuotaOverrides> {
    // In one transaction, so two admins changing different limits at once both keep theirs.
    return this.db.transaction().execute(async (trx) => {
      const next = await quotaOverridesOf(trx, userId);
      for (const key of Object.keys(change) as (keyof QuotaLimits)[]) {
        const value = change[key];
        if (value === null) delete next[key];
        else if (value !== undefined) next[key] = value;
      }
      if (Object.keys(next).length === 0) {
        await trx.deleteFrom('user_quotas').where('user_id', '=', userId).execute();
        return next;
      }
      const row = {
        user_id: userId,
        updated_at: at.toISOString(),
        ...Object.fromEntries(quotaColumns.map(([key, column]) => [column, next[key] ?? null])),
      } as Tables['user_quotas'];
      await trx
        .insertInto('user_quotas')
        .values(row)
        .onConflict((oc) => oc.column('user_id').doUpdateSet(row))
        .execute();
      return next;
    });
  }

  async close(): Promise<void> {
    await this.db.destroy();
  }
}

const quotaColumns = [
  ['sandboxes', 'sandboxes'],
  ['cpus', 'cpus'],
  ['memoryMb', 'memory_mb'],
  ['pids', 'pids'],
  ['timeoutSec', 'timeout_sec'],
  ['logBytes', 'log_bytes'],
] as const satisfies readonly (readonly [keyof QuotaLimits, keyof Tables['user_quotas']])[];

async function quotaOverridesOf(db: Kysely<Tables> | Transaction<Tables>, userId: string): Promise<QuotaOverrides> {
  const row = await db.selectFrom('user_quotas').selectAll().where('user_id', '=', userId).executeTakeFirst();
  const overrides: QuotaOverrides = {};
  for (const [key, column] of quotaColumns) {
    const value = row?.[column];
    if (value !== undefined && value !== null) overrides[key] = value;
  }
  return overrides;
}

/** Takes a sandbox's logged bytes off its owner's total and sets its own count to 0. */
async function forgetLogBytes(trx: Transaction<Tables>, sandboxId: string): Promise<void> {
  const sandbox = await trx.selectFrom('sandboxes').select(['owner_id', 'log_bytes']).where('id', '=', sandboxId).executeTakeFirst();
  if (!sandbox || sandbox.log_bytes === 0) return;
  await trx
    .updateTable('users')
    .set((eb) => ({ log_bytes: eb('log_bytes', '-', sandbox.log_bytes) }))
    .where('id', '=', sandbox.owner_id)
    .execute();
  await trx.updateTable('sandboxes').set({ log_bytes: 0 }).where('id', '=', sandboxId).execute();
}

/** A user's live sandboxes with the sums of their limits, and their logged bytes (all sandboxes). */
async function usageOf(db: Kysely<Tables> | Transaction<Tables>, userId: string): Promise<UserUsage> {
  // Written as the sandboxes_live index's condition, so SQLite reads only live rows through it.
  const row = await db
    .selectFrom('sandboxes')
    .select([
      sql<number>`COUNT(*)`.as('sandboxes'),
      sql<number>`COALESCE(SUM(cpus), 0)`.as('cpus'),
      sql<number>`COALESCE(SUM(memory_mb), 0)`.as('memory_mb'),
      sql<number>`COALESCE(SUM(pids_limit), 0)`.as('pids'),
    ])
    .where('owner_id', '=', userId)
    .where(sql<boolean>`status IN ('pending', 'running', 'sleeping')`)
    .executeTakeFirstOrThrow();
  const user = await db.selectFrom('users').select('log_bytes').where('id', '=', userId).executeTakeFirst();
  return { sandboxes: row.sandboxes, cpus: row.cpus, memoryMb: row.memory_mb, pids: row.pids, logBytes: user?.log_bytes ?? 0 };
}

function toUser(row: Omit<Tables['users'], 'log_bytes'>): UserRecord {
  return { id: row.id, name: row.name, isAdmin: row.is_admin === 1, createdAt: new Date(row.created_at) };
}

function toSshKey(row: Tables['ssh_keys']): SshKeyRecord {
  return {
    id: row.id,
    userId: row.user_id,
    name: row.name,
    type: row.type,
    publicKey: row.public_key,
    fingerprint: row.fingerprint,
    createdAt: new Date(row.created_at),
    lastUsedAt: row.last_used_at ? new Date(row.last_used_at) : null,
  };
}

function toRow(sandbox: SandboxRecord): SandboxRow {
  return {
    id: sandbox.id,
    owner_id: sandbox.ownerId,
    name: sandbox.name,
    image: sandbox.image,
    status: sandbox.status,
    persistent: sandbox.persistent ? 1 : 0,
    cpus: sandbox.limits.cpus,
    memory_mb: sandbox.limits.memoryMb,
    pids_limit: sandbox.limits.pids,
    open_files: sandbox.limits.openFiles,
    network: sandbox.network,
    ssh_agent_forwarding: sandbox.sshAgentForwarding ? 1 : 0,
    default_user: sandbox.defaultUser,
    env_json: JSON.stringify(sandbox.env),
    egress_rules: JSON.stringify(sandbox.egress),
    exit_code: sandbox.exitCode,
    status_reason: sandbox.statusReason,
    log_bytes: 0,
    log_trimmed_bytes: sandbox.logTrimmedBytes,
    workspace_id: sandbox.workspaceId,
    created_at: sandbox.createdAt.toISOString(),
    updated_at: sandbox.updatedAt.toISOString(),
  };
}

function toSandbox(row: SandboxRow): SandboxRecord {
  return {
    id: row.id,
    ownerId: row.owner_id,
    name: row.name,
    image: row.image,
    status: row.status as SandboxStatus,
    persistent: row.persistent === 1,
    limits: { cpus: row.cpus, memoryMb: row.memory_mb, pids: row.pids_limit, openFiles: row.open_files },
    network: row.network as NetworkMode,
    sshAgentForwarding: row.ssh_agent_forwarding === 1,
    defaultUser: row.default_user,
    env: JSON.parse(row.env_json) as Record<string, string>,
    egress: JSON.parse(row.egress_rules) as EgressRules,
    exitCode: row.exit_code,
    statusReason: row.status_reason,
    logTrimmedBytes: row.log_trimmed_bytes,
    workspaceId: row.workspace_id,
    createdAt: new Date(row.created_at),
    updatedAt: new Date(row.updated_at),
  };
}

function toWorkspaceRow(workspace: WorkspaceRecord): Tables['workspaces'] {
  return {
    id: workspace.id,
    owner_id: workspace.ownerId,
    name: workspace.name,
    disk_bytes: workspace.diskBytes,
    base_id: workspace.baseId,
    created_at: workspace.createdAt.toISOString(),
    updated_at: workspace.updatedAt.toISOString(),
    last_used_at: workspace.lastUsedAt?.toISOString() ?? null,
  };
}

function toWorkspace(row: Tables['workspaces']): WorkspaceRecord {
  return {
    id: row.id,
    ownerId: row.owner_id,
    name: row.name,
    diskBytes: row.disk_bytes,
    baseId: row.base_id,
    createdAt: new Date(row.created_at),
    updatedAt: new Date(row.updated_at),
    lastUsedAt: row.last_used_at ? new Date(row.last_used_at) : null,
  };
}
