// The quota defaults in roostd's configuration: env, file, and refusals of what cannot work.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadConfig } from './config.js';

const noFile = { ROOST_CONFIG_FILE: undefined };

describe('quota configuration', () => {
  it('has defaults for every limit', () => {
    assert.deepEqual(loadConfig({ ...noFile }).quota, {
      sandboxes: 20,
      cpus: 32,
      memoryMb: 32_768,
      pids: 32_768,
      timeoutSec: 86_400,
      logBytes: 256 * 1024 * 1024,
    });
  });

  it('reads ROOST_QUOTA_* over the config file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'roost-config-'));
    try {
      const file = join(dir, 'roostd.json');
      writeFileSync(file, JSON.stringify({ quota: { sandboxes: 3, pids: 500 } }));
      const config = loadConfig({
        ROOST_CONFIG_FILE: file,
        ROOST_QUOTA_SANDBOXES: '7',
        ROOST_QUOTA_CPUS: '2.5',
        ROOST_QUOTA_MEMORY_MB: '4096',
        ROOST_QUOTA_TIMEOUT_SEC: '600',
        ROOST_QUOTA_LOG_BYTES: '1048576',
      });
      assert.deepEqual(config.quota, { sandboxes: 7, cpus: 2.5, memoryMb: 4096, pids: 500, timeoutSec: 600, logBytes: 1_048_576 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses durations a timer cannot hold and values that are not numbers, naming each', () => {
    assert.throws(
      () => loadConfig({ ...noFile, ROOST_QUOTA_TIMEOUT_SEC: '2147484', ROOST_QUOTA_SANDBOXES: 'many', ROOST_QUOTA_CPUS: '-1' }),
      (error: Error) => {
        assert.match(error.message, /quota\.timeoutSec: at most 2147483 s \(about 24\.8 days\), the longest a timer can wait/);
        assert.match(error.message, /quota\.sandboxes/);
        assert.match(error.message, /quota\.cpus/);
        return true;
      },
    );
    assert.throws(() => loadConfig({ ...noFile }, { ssh: { keepaliveIntervalMs: 2 ** 31 } }), /ssh\.keepaliveIntervalMs: at most 2147483647 ms/);
    assert.equal(loadConfig({ ...noFile, ROOST_QUOTA_TIMEOUT_SEC: '2147483' }).quota.timeoutSec, 2_147_483);
  });

  it('keeps 500 ended runs and 128 MiB of their logs per user unless told; env beats the file; nonsense is refused', () => {
    assert.deepEqual(loadConfig({ ...noFile }).runRetention, { count: 500, bytes: 128 * 1024 * 1024 });
    const dir = mkdtempSync(join(tmpdir(), 'roost-config-'));
    try {
      const file = join(dir, 'roostd.json');
      writeFileSync(file, JSON.stringify({ runRetention: { count: 10, bytes: 5000 } }));
      assert.deepEqual(loadConfig({ ROOST_CONFIG_FILE: file }).runRetention, { count: 10, bytes: 5000 });
      assert.deepEqual(loadConfig({ ROOST_CONFIG_FILE: file, ROOST_RUN_RETENTION_COUNT: '3' }).runRetention, { count: 3, bytes: 5000 });
      assert.deepEqual(loadConfig({ ...noFile, ROOST_RUN_RETENTION_BYTES: '1000' }).runRetention, { count: 500, bytes: 1000 });
      assert.throws(() => loadConfig({ ...noFile, ROOST_RUN_RETENTION_COUNT: '0' }), /runRetention\.count/);
      assert.throws(() => loadConfig({ ...noFile, ROOST_RUN_RETENTION_BYTES: 'lots' }), /runRetention\.bytes/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
