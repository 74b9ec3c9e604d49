// The Store conformance suite against store-sqlite: on a database file in a temp dir (reopened
// after close, as a restarted daemon does) and in memory.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteStore } from '@roost/store-sqlite';
import { storeConformance } from './store-conformance.js';

storeConformance({
  name: 'store-sqlite (file)',
  newStore: async () => {
    const dir = await mkdtemp(join(tmpdir(), 'roost-store-'));
    const path = join(dir, 'roost.db');
    try {
      return {
        store: await openSqliteStore({ path }),
        reopen: () => openSqliteStore({ path }),
        cleanup: () => rm(dir, { recursive: true, force: true }),
      };
    } catch (error) {
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
  },
});

storeConformance({
  name: 'store-sqlite (:memory:)',
  newStore: async () => ({ store: await openSqliteStore({ path: ':memory:' }), cleanup: async () => {} }),
});
