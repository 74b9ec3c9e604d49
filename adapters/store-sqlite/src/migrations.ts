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
  '0009_stopped_sandboxes_keep_names': {
    async up(db: Kysely<unknown>) {
      // A stopped sandbox now keeps its name (it can be started again); before, a name was held
      // only while its sandbox was live, so a database may hold twins: a live and a stopped one,
      // or several stopped ones, of one owner and name. The live one (else the newest) keeps the
      // name; each other gets the first free `<name>-<n>` and says so in its status reason. This
      // never fails on data: the daemon must start.
      await sql`DROP INDEX IF EXISTS sandboxes_live_name`.execute(db);
      const { rows } = await sql<{ id: string; owner_id: string; name: string; status: string }>`
        SELECT id, owner_id, name, status FROM sandboxes
         WHERE status IN ('pending', 'running', 'sleeping', 'stopped')
         ORDER BY owner_id, name, CASE WHEN status = 'stopped' THEN 1 ELSE 0 END, created_at DESC, id`.execute(db);
      const namesOf = new Map<string, Set<string>>();
      const taken = async (ownerId: string) => {
        let names = namesOf.get(ownerId);
        if (!names) {
          const all = await sql<{ name: string }>`SELECT name FROM sandboxes WHERE owner_id = ${ownerId}`.execute(db);
          names = new Set(all.rows.map((row) => row.name));
          namesOf.set(ownerId, names);
        }
        return names;
      };
      let previous: { owner_id: string; name: string } | undefined;
      for (const row of rows) {
        const twin = previous?.owner_id === row.owner_id && previous.name === row.name;
        previous = row;
        if (!twin) continue;
        const names = await taken(row.owner_id);
        const renamed = freeName(row.name, names);
        names.add(renamed);
        const note = `renamed from "${row.name}" when stopped sandboxes began to keep their names (another of yours had it)`;
        await sql`UPDATE sandboxes SET name = ${renamed},
                         status_reason = CASE WHEN status_reason IS NULL THEN ${note} ELSE status_reason || '; ' || ${note} END
                   WHERE id = ${row.id}`.execute(db);
      }
      await sql`CREATE UNIQUE INDEX sandboxes_held_name ON sandboxes (owner_id, name)
                WHERE status IN ('pending', 'running', 'sleeping', 'stopped')`.execute(db);
      // The quota counts live sandboxes (usageOf), which the index above no longer matches exactly.
      await sql`CREATE INDEX sandboxes_live ON sandboxes (owner_id)
                WHERE status IN ('pending', 'running', 'sleeping')`.execute(db);
    },
  },
  '0010_workspaces': {
    async up(db: Kysely<unknown>) {
      // A workspace outlives its sandboxes: its files are the Workspaces port's, its name and
      // size are here. Names are unique per owner.
      await db.schema
        .createTable('workspaces')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('owner_id', 'text', (c) => c.notNull().references('users.id'))
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('disk_bytes', 'integer')
        .addColumn('base_id', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addColumn('last_used_at', 'text')
        .execute();
      await sql`CREATE UNIQUE INDEX workspaces_owner_name ON workspaces (owner_id, name)`.execute(db);
      // No foreign key: ended runs keep the id of a workspace removed since.
      await db.schema.alterTable('sandboxes').addColumn('workspace_id', 'text').execute();
      // A workspace is mounted by at most one live sandbox: two overlays on one upper dir corrupt it.
      await sql`CREATE UNIQUE INDEX sandboxes_live_workspace ON sandboxes (workspace_id)
                WHERE workspace_id IS NOT NULL AND status IN ('pending', 'running', 'sleeping')`.execute(db);
    },
  },
};

/** `<name>-<n>` with the lowest n not in `taken`, cut so it stays a valid name (63 characters, no '-' at the end). */
export function freeName(name: string, taken: Set<string>): string {
  for (let n = 2; ; n++) {
    const suffix = `-${n}`;
    const candidate = `${name.slice(0, 63 - suffix.length).replace(/-+$/, '')}${suffix}`;
    if (!taken.has(candidate)) return candidate;
  }
}
