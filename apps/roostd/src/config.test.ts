import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadConfig } from './config.js';

const noFile = { ROOST_CONFIG_FILE: undefined };

describe('loadConfig', () => {
  it('has defaults for network and pool', () => {
    const config = loadConfig({ ...noFile });
    assert.deepEqual(config.network, { default: 'none', allowNat: true, dnsServers: [], egressAllowCidrs: [] });
    assert.equal(config.instance, undefined);
    assert.deepEqual(config.pool, { size: 4, images: ['debian'], memoryShare: 0.25 });
  });

  it('reads the network and pool variables', () => {
    const config = loadConfig({
      ROOST_NETWORK: 'nat',
      ROOST_ALLOW_NAT: 'false',
      ROOST_DNS_SERVERS: '10.0.0.2, 10.0.0.3:5353',
      ROOST_SUBNET: '10.99.0.0/20',
      ROOST_EGRESS_ALLOW_CIDRS: '192.168.5.0/24, 169.254.169.254/32',
      ROOST_INSTANCE: 'test1',
      ROOST_POOL_SIZE: '0',
      ROOST_POOL_IMAGES: 'debian,alpine',
    });
    assert.deepEqual(config.network, {
      default: 'nat',
      allowNat: false,
      dnsServers: ['10.0.0.2', '10.0.0.3:5353'],
      subnet: '10.99.0.0/20',
      egressAllowCidrs: ['192.168.5.0/24', '169.254.169.254/32'],
    });
    assert.equal(config.instance, 'test1');
    assert.deepEqual(config.pool, { size: 0, images: ['debian', 'alpine'], memoryShare: 0.25 });
  });

  it('sizes the workspace pool and its snapshots, and refuses a pool too small for btrfs', () => {
    const defaults = loadConfig({ ...noFile }).workspaces;
    assert.equal(defaults.poolBytes, 20 * 1024 ** 3);
    assert.equal(defaults.keepSnapshots, 5);
    const set = loadConfig({ ...noFile, ROOST_WORKSPACE_POOL_BYTES: String(2 * 1024 ** 3), ROOST_WORKSPACE_KEEP_SNAPSHOTS: '9' }).workspaces;
    assert.equal(set.poolBytes, 2 * 1024 ** 3);
    assert.equal(set.keepSnapshots, 9);
    assert.throws(() => loadConfig({ ...noFile, ROOST_WORKSPACE_POOL_BYTES: '1000000' }), /poolBytes.*at least 256 MiB/s);
  });

  it('sets every HTTP limit, and takes them from the config file', () => {
    const defaults = loadConfig({ ...noFile }).http;
    for (const [key, value] of Object.entries(defaults)) assert.ok(Number.isInteger(value) && value > 0, `http.${key} is set`);
    const dir = mkdtempSync(join(tmpdir(), 'roost-config-'));
    try {
      const file = join(dir, 'roostd.json');
      writeFileSync(file, JSON.stringify({ http: { maxConnections: 100, headersTimeoutMs: 5000 } }));
      const config = loadConfig({ ROOST_CONFIG_FILE: file });
      assert.deepEqual(config.http, { ...defaults, maxConnections: 100, headersTimeoutMs: 5000 });
      writeFileSync(file, JSON.stringify({ http: { headersTimeoutMs: 60_000, requestTimeoutMs: 30_000 } }));
      assert.throws(() => loadConfig({ ROOST_CONFIG_FILE: file }), /http\.headersTimeoutMs must not exceed http\.requestTimeoutMs/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('names every bad value in one message', () => {
    assert.throws(
      () => loadConfig({ ROOST_NETWORK: 'open', ROOST_ALLOW_NAT: 'yes', ROOST_POOL_SIZE: 'many', ROOST_INSTANCE: 'Not-OK', ROOST_SUBNET: 'ten' }),
      (error: Error) => {
        assert.match(error.message, /^invalid configuration: /);
        for (const key of ['network.default', 'network.allowNat', 'pool.size', 'instance', 'network.subnet']) assert.match(error.message, new RegExp(key.replace('.', '\\.')));
        return true;
      },
    );
  });
});
