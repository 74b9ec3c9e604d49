// The fake is what core's unit tests stand on: it keeps files, forks copies and fails syncs
// the way the real ones are specified to (the integrator also runs workspacesConformance on it).
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { FakeWorkspaces } from './fake-workspaces.js';

describe('FakeWorkspaces', () => {
  let ws: FakeWorkspaces;
  beforeEach(() => {
    ws = new FakeWorkspaces();
  });
  afterEach(() => {
    ws.dispose();
    assert.equal(existsSync(ws.dir), false);
  });

  it('keeps files across open/release and forks copies that do not change the base', async () => {
    await ws.create('ws_a', { diskBytes: 1000 });
    const mount = await ws.open('ws_a');
    writeFileSync(join(mount.dir, 'upper', 'f'), 'one');
    await ws.release('ws_a');
    await ws.create('ws_b', { base: 'ws_a' });
    writeFileSync(join(ws.upperDir('ws_b'), 'f'), 'two');
    assert.equal(readFileSync(join((await ws.open('ws_a')).dir, 'upper', 'f'), 'utf8'), 'one');
    assert.deepEqual((await ws.usage('ws_a')), { usedBytes: 3, limitBytes: 1000 });
    await assert.rejects(ws.create('ws_a', {}), { code: 'WORKSPACE_EXISTS' });
  });

  it('forks and syncs an in-use workspace only under a quiesce, and restores it never', async () => {
    await ws.create('ws_a', {});
    await ws.open('ws_a');
    await assert.rejects(ws.fork('ws_a', 'ws_b'), { code: 'WORKSPACE_IN_USE' });
    await assert.rejects(ws.sync('ws_a'), { code: 'WORKSPACE_IN_USE' });
    let frozen = 0;
    const snap = await ws.sync('ws_a', { quiesce: async (capture) => { frozen++; return capture(); } });
    await ws.fork('ws_a', 'ws_b', { quiesce: async (capture) => { frozen++; return capture(); } });
    assert.equal(frozen, 2);
    await assert.rejects(ws.restore('ws_a', snap.id), { code: 'WORKSPACE_IN_USE' });
  });

  it('a failing store keeps the local copy and says since when and why', async () => {
    await ws.create('ws_a', {});
    writeFileSync(join((await ws.open('ws_a')).dir, 'upper', 'f'), 'data');
    ws.failSyncs('connect ECONNREFUSED');
    await assert.rejects(ws.release('ws_a'), { code: 'WORKSPACE_SYNC_FAILED', message: /ECONNREFUSED/ });
    const state = await ws.syncState('ws_a');
    assert.equal(state.failure, 'connect ECONNREFUSED');
    assert.ok(state.failingSince);
    assert.equal(state.pendingBytes, 4);
    assert.equal(readFileSync(join(ws.upperDir('ws_a'), 'f'), 'utf8'), 'data');
    ws.failSyncs(null);
    await ws.sync('ws_a');
    assert.equal((await ws.syncState('ws_a')).failure, null);
    assert.equal((await ws.snapshots('ws_a')).length, 1);
    await assert.rejects(ws.resize('ws_a', 2), { code: 'DISK_TOO_SMALL' });
  });
});
