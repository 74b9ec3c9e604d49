// The SSH gateway's limits in roostd's config file: defaults, a file's values, bad values named.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadConfig } from './config.js';

describe('loadConfig: ssh limits', () => {
  it('has defaults, and takes a file\'s values on top of them', () => {
    assert.equal(loadConfig({ ROOST_CONFIG_FILE: undefined }).ssh.loginTimeoutMs, 20_000);
    const dir = mkdtempSync(join(tmpdir(), 'roost-config-'));
    try {
      const file = join(dir, 'roostd.json');
      writeFileSync(file, JSON.stringify({ ssh: { loginTimeoutMs: 5000, maxUnauthenticatedPerSource: 4 } }));
      const { ssh } = loadConfig({ ROOST_CONFIG_FILE: file });
      assert.equal(ssh.loginTimeoutMs, 5000);
      assert.equal(ssh.maxUnauthenticatedPerSource, 4);
      assert.equal(ssh.maxUnauthenticated, 512);
      assert.equal(ssh.keepaliveIntervalMs, 15_000);
      writeFileSync(file, JSON.stringify({ ssh: { loginTimeoutMs: 0, maxChannelsPerConnection: -1 } }));
      assert.throws(() => loadConfig({ ROOST_CONFIG_FILE: file }), /ssh\.loginTimeoutMs.*ssh\.maxChannelsPerConnection/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
