// Migration 0009 on a database made by the schema before it: twins (a live and a stopped
// sandbox, or several stopped ones, of one owner and name) are resolved, never a failed start.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { Kysely, Migrator, sql, SqliteDialect, type Migration } from 'kysely';
import { freeName, migrations } from './migrations.js';
import { openSqliteStore } from './store.js';

/** A database file migrated up to (not including) `stopBefore`, as an older roostd left it. */
async function databaseBefore(path: string, stopBefore: string): Promise<Kysely<unknown>> {
  const db = new Kysely<unknown>({ dialect: new SqliteDialect({ database: new Database(path) }) });
  const older: Record<string, Migration> = Object.fromEntries(Object.entries(migrations).filter(([name]) => name < stopBefore));
  const { error } = await new Migrator({ db, provider: { getMigrations: async () => older } }).migrateToLatest();
  if (error) throw error;
  return db;
}

describe('migration 0009: stopped sandboxes keep their names', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'roost-migration-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('renames the twins an older database holds, keeps the live one (else the newest) as it was, and then refuses new twins', async () => {
    const path = join(dir, 'twins.sqlite');
    const old = await databaseBefore(path, '0009');
    await sql`INSERT INTO users (id, name, is_admin, created_at) VALUES ('usr_a', 'alice', 0, '2026-01-01T00:00:00Z'), ('usr_b', 'bob', 0, '2026-01-01T00:00:00Z')`.execute(old);
    const insert = (id: string, owner: string, name: string, status: string, createdAt: string) =>
      sql`INSERT INTO sandboxes (id, owner_id, name, image, status, persistent, cpus, memory_mb, pids_limit, env_json, created_at, updated_at)
          VALUES (${id}, ${owner}, ${name}, 'debian', ${status}, 1, 1, 512, 256, '{}', ${createdAt}, ${createdAt})`.execute(old);
    // alice: a stopped "dev" and a live "dev" made after it; and three stopped "db" (one name
    // "db-2" already taken by an ended run); a 63-character name stopped twice.
    await insert('sb_dev_old', 'usr_a', 'dev', 'stopped', '2026-01-01T00:00:01Z');
    await insert('sb_dev_live', 'usr_a', 'dev', 'running', '2026-01-01T00:00:02Z');
    await insert('sb_db_1', 'usr_a', 'db', 'stopped', '2026-01-01T00:00:03Z');
    await insert('sb_db_2', 'usr_a', 'db', 'stopped', '2026-01-01T00:00:04Z');
    await insert('sb_db_3', 'usr_a', 'db', 'stopped', '2026-01-01T00:00:05Z');
    await insert('sb_db2_run', 'usr_a', 'db-2', 'completed', '2026-01-01T00:00:06Z');
    const long = `a${'b'.repeat(61)}c`;
    await insert('sb_long_1', 'usr_a', long, 'stopped', '2026-01-01T00:00:07Z');
    await insert('sb_long_2', 'usr_a', long, 'stopped', '2026-01-01T00:00:08Z');
    // Not twins: ended runs share names freely, and bob's "dev" is his own.
    await insert('sb_job_1', 'usr_a', 'job', 'completed', '2026-01-01T00:00:09Z');
    await insert('sb_job_2', 'usr_a', 'job', 'error', '2026-01-01T00:00:10Z');
    await insert('sb_bob_dev', 'usr_b', 'dev', 'stopped', '2026-01-01T00:00:11Z');
    await old.destroy();

    const store = await openSqliteStore({ path });
    try {
      const byId = async (id: string) => (await store.getSandbox(id))!;
      assert.equal((await byId('sb_dev_live')).name, 'dev');
      assert.equal((await byId('sb_dev_live')).statusReason, null);
      const renamedDev = await byId('sb_dev_old');
      assert.equal(renamedDev.name, 'dev-2');
      assert.match(renamedDev.statusReason ?? '', /renamed from "dev"/);
      // The newest stopped one keeps the name; the others skip the "db-2" an ended run has.
      assert.equal((await byId('sb_db_3')).name, 'db');
      assert.deepEqual([(await byId('sb_db_2')).name, (await byId('sb_db_1')).name], ['db-3', 'db-4']);
      const longRenamed = (await byId('sb_long_1')).name;
      assert.equal(longRenamed, `a${'b'.repeat(60)}-2`);
      assert.ok(longRenamed.length <= 63);
      assert.equal((await byId('sb_long_2')).name, long);
      assert.deepEqual([(await byId('sb_job_1')).name, (await byId('sb_job_2')).name], ['job', 'job']);
      assert.equal((await byId('sb_bob_dev')).name, 'dev');

      // From now on a stopped sandbox holds its name against a new one.
      const now = new Date();
      const record = {
        ...(await byId('sb_bob_dev')),
        id: 'sb_bob_dev_twin',
        status: 'pending' as const,
        createdAt: now,
        updatedAt: now,
      };
      await assert.rejects(store.insertSandbox(record), { code: 'SANDBOX_NAME_TAKEN' });
      // An ended run's name is free.
      await store.insertSandbox({ ...record, name: 'job' });
      assert.equal((await store.sandboxesNamed('usr_b', 'job')).length, 1);
    } finally {
      await store.close();
    }
  });

  it('a database without twins migrates unchanged; a second open is a no-op', async () => {
    const path = join(dir, 'plain.sqlite');
    const old = await databaseBefore(path, '0009');
    await sql`INSERT INTO users (id, name, is_admin, created_at) VALUES ('usr_a', 'alice', 0, '2026-01-01T00:00:00Z')`.execute(old);
    await sql`INSERT INTO sandboxes (id, owner_id, name, image, status, persistent, cpus, memory_mb, pids_limit, env_json, created_at, updated_at)
              VALUES ('sb_one', 'usr_a', 'one', 'debian', 'stopped', 1, 1, 512, 256, '{}', '2026-01-01T00:00:01Z', '2026-01-01T00:00:01Z')`.execute(old);
    await old.destroy();
    for (let open = 0; open < 2; open++) {
      const store = await openSqliteStore({ path });
      const sandbox = await store.getSandbox('sb_one');
      assert.equal(sandbox?.name, 'one');
      assert.equal(sandbox?.statusReason, null);
      await store.close();
    }
  });

  it('freeName stays a valid name', () => {
    assert.equal(freeName('dev', new Set()), 'dev-2');
    assert.equal(freeName('dev', new Set(['dev-2', 'dev-3'])), 'dev-4');
    // Cut to 63 characters without leaving a '-' before the suffix.
    const name = `${'a'.repeat(60)}-bc`;
    assert.equal(freeName(name, new Set()), `${'a'.repeat(60)}-2`);
  });
});
