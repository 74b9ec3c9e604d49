// The roostd binary as an operator meets it: help, refusals with a fix, start-up and Ctrl-C.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';

const roostd = fileURLToPath(new URL('./main.js', import.meta.url));

describe('roostd binary', () => {
  it('teaches with --help', () => {
    const result = spawnSync(process.execPath, [roostd, '--help'], { encoding: 'utf8' });
    assert.equal(result.status, 0);
    assert.match(result.stdout, /ROOST_DATA_DIR/);
    assert.match(result.stdout, /ROOST_HTTP_ADDR/);
    assert.match(result.stdout, /ROOST_RUN_RETENTION_COUNT\s+ended runs kept per user \(default 500\)/);
  });

  it('refuses to start when not root, naming the fix', () => {
    const result = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, roostd], {
      encoding: 'utf8',
    });
    assert.equal(result.status, 1);
    assert.match(result.stderr, /roostd cannot run sandboxes on this host/);
    assert.match(result.stderr, /not running as root/);
    assert.match(result.stderr, /fix: run it as root, e\.g\. sudo npm start/);
  });

  it('refuses a bad configuration with one clear line', () => {
    const result = spawnSync(process.execPath, [roostd], { encoding: 'utf8', env: { ...process.env, ROOST_HTTP_ADDR: 'nowhere' } });
    assert.equal(result.status, 1);
    assert.match(result.stderr, /invalid configuration: httpAddr: an address is HOST:PORT/);
  });

  it('starts, writes the admin token 0600, says where everything is, and stops cleanly on Ctrl-C', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'roostd-main-'));
    try {
      const child = spawn(process.execPath, [roostd], {
        env: { ...process.env, ROOST_DATA_DIR: dataDir, ROOST_HTTP_ADDR: '127.0.0.1:0', ROOST_SSH_ADDR: '127.0.0.1:0', ROOST_POOL_SIZE: '0',
          // The workspace pool is preallocated: a test needs no 20 GiB.
          ROOST_WORKSPACE_POOL_BYTES: String(1024 ** 3) },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stdout.resume();
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
      const deadline = Date.now() + 30_000;
      while (!stderr.includes('Ctrl-C stops roostd') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.match(stderr, /roostd .* is running \((crun|runc) /);
      assert.match(stderr, /API\s+http:\/\/127\.0\.0\.1:\d+\/api\/v1/);
      assert.match(stderr, /SSH\s+ssh -p \d+ <sandbox>@127\.0\.0\.1/);
      assert.match(stderr, /npx roost login .* && npx roost run 'echo Hello World'/);
      assert.equal(statSync(join(dataDir, 'ssh', 'ssh_host_ed25519_key')).mode & 0o777, 0o600);
      assert.equal(statSync(join(dataDir, 'admin-token')).mode & 0o777, 0o600);
      child.kill('SIGINT');
      assert.equal(await exited, 0);
      assert.match(stderr, /SIGINT received, stopping/);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
