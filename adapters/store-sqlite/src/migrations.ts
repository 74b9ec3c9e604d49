// Schema migrations, applied in order at start-up. Never edit one that has shipped: add a new one.
import { sql, type Kysely, type Migration } from 'kysely';

export const migrations: Record<string, Migration> = {
  '0001_users_tokens_sandboxes': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('users')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull().unique())
        .addColumn('is_admin', 'integer', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('tokens')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('token_hash', 'text', (c) => c.notNull().unique())
        .addColumn('description', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('last_used_at', 'text')
        .execute();
      await db.schema
        .createTable('sandboxes')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('owner_id', 'text', (c) => c.notNull().references('users.id'))
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('image', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('persistent', 'integer', (c) => c.notNull())
        .addColumn('cpus', 'real', (c) => c.notNull())
        .addColumn('memory_mb', 'integer', (c) => c.notNull())
        .addColumn('pids_limit', 'integer', (c) => c.notNull())
        .addColumn('env_json', 'text', (c) => c.notNull())
        .addColumn('exit_code', 'integer')
        .addColumn('status_reason', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .execute();
      // A name is taken only while its sandbox is alive; ended runs keep their records.
      await sql`CREATE UNIQUE INDEX sandboxes_live_name ON sandboxes (owner_id, name)
                WHERE status IN ('pending', 'running', 'sleeping')`.execute(db);
      await db.schema.createIndex('sandboxes_owner').on('sandboxes').columns(['owner_id', 'created_at']).execute();
      await db.schema
        .createTable('run_logs')
        .addColumn('sandbox_id', 'text', (c) => c.notNull())
        .addColumn('seq', 'integer', (c) => c.notNull())
        .addColumn('stream', 'text', (c) => c.notNull())
        .addColumn('data', 'blob', (c) => c.notNull())
        .addPrimaryKeyConstraint('run_logs_pk', ['sandbox_id', 'seq'])
        .execute();
    },
  },
  '0002_sandbox_open_files_network': {
    async up(db: Kysely<unknown>) {
      // Sandboxes made before this migration had the daemon's defaults of the time.
      await db.schema.alterTable('sandboxes').addColumn('open_files', 'integer', (c) => c.notNull().defaultTo(1024)).execute();
      await db.schema.alterTable('sandboxes').addColumn('network', 'text', (c) => c.notNull().defaultTo('none')).execute();
    },
  },
  '0003_ssh_keys': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('ssh_keys')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('type', 'text', (c) => c.notNull())
        .addColumn('public_key', 'text', (c) => c.notNull())
        .addColumn('fingerprint', 'text', (c) => c.notNull().unique())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('last_used_at', 'text')
        .execute();
      await db.schema.createIndex('ssh_keys_user').on('ssh_keys').column('user_id').execute();
    },
  },
  '0004_sandbox_ssh_agent_forwarding': {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable('sandboxes').addColumn('ssh_agent_forwarding', 'integer', (c) => c.notNull().defaultTo(0)).execute();
    },
  },
  '0005_sandbox_default_user': {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable('sandboxes').addColumn('default_user', 'text', (c) => c.notNull().defaultTo('root')).execute();
    },
  },
  '0006_user_quotas': {
    async up(db: Kysely<unknown>) {
      // An admin's per-user overrides of the daemon's default quotas; null follows the default.
      await db.schema
        .createTable('user_quotas')
        .addColumn('user_id', 'text', (c) => c.primaryKey().references('users.id').onDelete('cascade'))
        .addColumn('sandboxes', 'integer')
        .addColumn('cpus', 'real')
        .addColumn('memory_mb', 'integer')
        .addColumn('pids', 'integer')
        .addColumn('timeout_sec', 'integer')
        .addColumn('log_bytes', 'integer')
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .execute();
      // Logged bytes per sandbox and per user, kept with every append, trim and delete: the log
      // quota is checked after every chunk, and a sum over a user's sandboxes (or chunks) took
      // ~1 ms per chunk with 10,000 runs.
      await db.schema.alterTable('sandboxes').addColumn('log_bytes', 'integer', (c) => c.notNull().defaultTo(0)).execute();
      await db.schema.alterTable('sandboxes').addColumn('log_trimmed_bytes', 'integer', (c) => c.notNull().defaultTo(0)).execute();
      await db.schema.alterTable('users').addColumn('log_bytes', 'integer', (c) => c.notNull().defaultTo(0)).execute();
      await sql`UPDATE sandboxes SET log_bytes = (SELECT COALESCE(SUM(length(data)), 0) FROM run_logs WHERE sandbox_id = sandboxes.id)`.execute(db);
      await sql`UPDATE users SET log_bytes = (SELECT COALESCE(SUM(log_bytes), 0) FROM sandboxes WHERE owner_id = users.id)`.execute(db);
      // Trimming looks for a user's oldest sandbox that still has output: without this, it
      // stepped over every run it had emptied before (20 ms per chunk with 10,000 runs).
      await sql`CREATE INDEX sandboxes_owner_logged ON sandboxes (owner_id, created_at) WHERE log_bytes > 0`.execute(db);
    },
  },
  '0007_sandbox_egress_rules': {
    async up(db: Kysely<unknown>) {
      // JSON {"allow": [...], "deny": [...]}: CIDRs and domain names, checked by core.
      await db.schema.alterTable('sandboxes').addColumn('egress_rules', 'text', (c) => c.notNull().defaultTo('{"allow":[],"deny":[]}')).execute();
    },
  },
  '0008_uid_ranges': {
    async up(db: Kysely<unknown>) {
      // Host uid/gid ranges of sandboxes (runtime-oci: 65536 ids each). No foreign key to
      // sandboxes: warm-pool members hold a range before a record names them.
      await db.schema
        .createTable('id_ranges')
        .addColumn('id_range', 'integer', (c) => c.primaryKey())
        .addColumn('holder_id', 'text', (c) => c.notNull().unique())
        .addColumn('allocated_at', 'text', (c) => c.notNull())
        .execute();
    },
  },
};
