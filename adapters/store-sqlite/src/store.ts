// The Store port on embedded SQLite, through kysely's typed queries.
import Database from 'better-sqlite3';
import { Kysely, Migrator, SqliteDialect, type Generated, type MigrationProvider } from 'kysely';
import {
  RoostError,
  type LogChunk,
  type SandboxPatch,
  type SandboxRecord,
  type NetworkMode,
  type SandboxStatus,
  type EgressRules,
  type SshKeyRecord,
  type Store,
  type TokenRecord,
  type UserRecord,
} from '@roost/core';
import { migrations } from './migrations.js';

interface Tables {
  users: { id: string; name: string; is_admin: number; created_at: string };
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
    created_at: string;
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

  async insertSandbox(sandbox: SandboxRecord): Promise<void> {
    try {
      await this.db.insertInto('sandboxes').values(toRow(sandbox)).execute();
    } catch (error) {
      if ((error as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE') {
        throw new RoostError('SANDBOX_NAME_TAKEN', `you already have a sandbox named "${sandbox.name}"`);
      }
      throw error;
    }
  }

  async getSandbox(id: string): Promise<SandboxRecord | undefined> {
    const row = await this.db.selectFrom('sandboxes').selectAll().where('id', '=', id).executeTakeFirst();
    return row && toSandbox(row);
  }

  /** The live sandbox of that name, or else the newest ended one. */
  async getSandboxByName(ownerId: string, name: string): Promise<SandboxRecord | undefined> {
    const row = await this.db
      .selectFrom('sandboxes')
      .selectAll()
      .where('owner_id', '=', ownerId)
      .where('name', '=', name)
      .orderBy((eb) => eb.case().when('status', 'in', ['pending', 'running', 'sleeping']).then(0).else(1).end())
      .orderBy('created_at', 'desc')
      .executeTakeFirst();
    return row && toSandbox(row);
  }

  async listSandboxes(filter: { ownerId?: string }): Promise<SandboxRecord[]> {
    let query = this.db.selectFrom('sandboxes').selectAll().orderBy('created_at', 'desc').orderBy('id');
    if (filter.ownerId) query = query.where('owner_id', '=', filter.ownerId);
    return (await query.execute()).map(toSandbox);
  }

  async updateSandbox(id: string, patch: SandboxPatch, at: Date): Promise<void> {
    await this.db
      .updateTable('sandboxes')
      .set({
        ...(patch.status !== undefined && { status: patch.status }),
        ...(patch.sshAgentForwarding !== undefined && { ssh_agent_forwarding: patch.sshAgentForwarding ? 1 : 0 }),
        ...(patch.defaultUser !== undefined && { default_user: patch.defaultUser }),
        ...(patch.egress !== undefined && { egress_rules: JSON.stringify(patch.egress) }),
        ...(patch.exitCode !== undefined && { exit_code: patch.exitCode }),
        ...(patch.statusReason !== undefined && { status_reason: patch.statusReason }),
        updated_at: at.toISOString(),
      })
      .where('id', '=', id)
      .execute();
  }

  async deleteSandbox(id: string): Promise<void> {
    await this.db.deleteFrom('sandboxes').where('id', '=', id).execute();
  }

  async appendLog(sandboxId: string, chunk: LogChunk): Promise<void> {
    await this.db
      .insertInto('run_logs')
      .values({ sandbox_id: sandboxId, seq: chunk.seq, stream: chunk.stream, data: chunk.data })
      .execute();
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
    await this.db.deleteFrom('run_logs').where('sandbox_id', '=', sandboxId).execute();
  }

  async close(): Promise<void> {
    await this.db.destroy();
  }
}

function toUser(row: Tables['users']): UserRecord {
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
    createdAt: new Date(row.created_at),
    updatedAt: new Date(row.updated_at),
  };
}
