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
  '0007_sandbox_egress_rules': {
    async up(db: Kysely<unknown>) {
      // JSON {"allow": [...], "deny": [...]}: CIDRs and domain names, checked by core.
      await db.schema.alterTable('sandboxes').addColumn('egress_rules', 'text', (c) => c.notNull().defaultTo('{"allow":[],"deny":[]}')).execute();
    },
  },
};
