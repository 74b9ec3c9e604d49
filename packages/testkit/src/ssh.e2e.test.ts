// The SSH gateway with the real OpenSSH client: keys, exec, stdin, exit status, refusals.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Roost } from '@roost/sdk';
import { FailureLimiter, loadOrCreateHostKeys, parseSshUsername } from '@roost/ssh-gateway';
import { cliPath, runCli } from './cli.js';
import { startDaemon, type TestDaemon } from './start-daemon.js';

interface SshResult {
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

describe('SSH gateway with OpenSSH', () => {
  let daemon: TestDaemon;
  const dir = mkdtempSync(join(tmpdir(), 'roost-ssh-'));
  const key = join(dir, 'id_ed25519');
  const otherKey = join(dir, 'other_ed25519');
  const knownHosts = join(dir, 'known_hosts');

  /** Runs the system ssh against the gateway, strict about the host key. */
  const ssh = (target: string, args: string[], opts: { input?: string; identity?: string; options?: string[] } = {}): Promise<SshResult> =>
    new Promise((resolve, reject) => {
      const child = spawn('ssh', [
        '-F', '/dev/null',
        '-p', String(daemon.sshPort),
        '-i', opts.identity ?? key,
        '-o', 'IdentitiesOnly=yes',
        '-o', 'BatchMode=yes',
        '-o', 'StrictHostKeyChecking=yes',
        '-o', `UserKnownHostsFile=${knownHosts}`,
        '-o', 'LogLevel=ERROR',
        ...(opts.options ?? []),
        `${target}@127.0.0.1`,
        ...args,
      ], { stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      child.on('error', reject);
      child.on('close', (exitCode) => resolve({ exitCode, stdout, stderr }));
      child.stdin.end(opts.input ?? '');
    });

  before(async () => {
    daemon = await startDaemon({ driver: 'oci' });
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', otherKey]);
    const hostKey = readFileSync(join(daemon.dataDir, 'ssh', 'ssh_host_ed25519_key.pub'), 'utf8').split(' ').slice(0, 2).join(' ');
    writeFileSync(knownHosts, `[127.0.0.1]:${daemon.sshPort} ${hostKey}\n`);
    await daemon.sdk.sshKeys.add(readFileSync(`${key}.pub`, 'utf8'));
    await daemon.sdk.sandboxes.create({ name: 'sshbox' });
  });
  after(async () => {
    await daemon?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs a command: output, stderr and exit code come back; the host key is the pinned one', async () => {
    const result = await ssh('sshbox', ['echo "hi from $(hostname) as $(id -un)"; echo oops >&2; exit 3']);
    assert.equal(result.stdout, 'hi from sshbox as root\n');
    assert.equal(result.stderr, 'oops\n');
    assert.equal(result.exitCode, 3);
  });

  it('pipes stdin through, binary-safe, to EOF', async () => {
    const input = Array.from({ length: 2000 }, (_, i) => `line ${i}`).join('\n');
    const result = await ssh('sshbox', ['sha256sum; echo done'], { input });
    const expected = execFileSync('sha256sum', { input }).toString();
    assert.equal(result.stdout, `${expected}done\n`);
    assert.equal(result.exitCode, 0);
  });

  it('passes a process killed by a signal back as an exit signal', async () => {
    const result = await ssh('sshbox', ['kill -TERM $$']);
    // OpenSSH exits 255 when the remote command died of a signal.
    assert.equal(result.exitCode, 255);
  });

  it('roost ssh runs the system ssh with the pinned host key; roost ssh-key lists the key', async () => {
    const home = mkdtempSync(join(tmpdir(), 'roost-ssh-home-'));
    const env = { ROOST_API_URL: daemon.url, ROOST_API_TOKEN: daemon.adminToken, HOME: home };
    try {
      const result = await runCli(['ssh', '-i', key, 'sshbox', '--', 'echo', 'via roost ssh; hostname'], { env });
      assert.equal(result.stdout, 'via roost ssh\nsshbox\n', result.stderr);
      assert.equal(result.exitCode, 0);
      assert.equal((await runCli(['ssh', '-i', key, 'sshbox', '--', 'exit 7'], { env })).exitCode, 7);
      assert.match(readFileSync(join(home, '.roost', 'known_hosts'), 'utf8'), new RegExp(`^\\[127\\.0\\.0\\.1\\]:${daemon.sshPort} ssh-ed25519 `, 'm'));
      const missing = await runCli(['ssh', 'no-such-box'], { env });
      assert.equal(missing.exitCode, 1);
      assert.match(missing.stderr, /SANDBOX_NOT_FOUND/);
      const keys = await runCli(['ssh-key', 'list'], { env });
      assert.match(keys.stdout, /ssh-ed25519\s+SHA256:/);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });

  it('roost ssh-config prints entries plain ssh uses as they are', async () => {
    const home = mkdtempSync(join(tmpdir(), 'roost-ssh-home-'));
    const env = { ROOST_API_URL: daemon.url, ROOST_API_TOKEN: daemon.adminToken, HOME: home };
    try {
      const config = await runCli(['ssh-config', '-i', key], { env });
      assert.equal(config.exitCode, 0, config.stderr);
      assert.match(config.stdout, /^Host roost-sshbox$/m);
      assert.match(config.stdout, /^# known_hosts .*ssh-ed25519 /m);
      writeFileSync(join(dir, 'config'), config.stdout);
      const result = await new Promise<SshResult>((resolve) => {
        const child = spawn('ssh', ['-F', join(dir, 'config'), '-o', 'BatchMode=yes', 'roost-sshbox', 'hostname'], { stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
        child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
        child.on('close', (exitCode) => resolve({ exitCode, stdout, stderr }));
      });
      assert.equal(result.stdout, 'sshbox\n', result.stderr);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });

  it('roost proxy carries SSH over the HTTP port as a ProxyCommand; refuses a sandbox that is not yours', async () => {
    const hostKey = readFileSync(join(daemon.dataDir, 'ssh', 'ssh_host_ed25519_key.pub'), 'utf8').split(' ').slice(0, 2).join(' ');
    writeFileSync(join(dir, 'known_hosts_proxy'), `roost-web ${hostKey}\n`);
    const viaProxy = (user: string) =>
      new Promise<SshResult>((resolve) => {
        const child = spawn('ssh', [
          '-F', '/dev/null', '-i', key, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes',
          '-o', `UserKnownHostsFile=${join(dir, 'known_hosts_proxy')}`, '-o', 'StrictHostKeyChecking=yes',
          '-o', `ProxyCommand=${process.execPath} ${cliPath} proxy %r`,
          `${user}@roost-web`, 'echo "over websocket from $(hostname)"',
        ], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ROOST_API_URL: daemon.url, ROOST_API_TOKEN: daemon.adminToken } });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
        child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
        child.on('close', (exitCode) => resolve({ exitCode, stdout, stderr }));
      });
    const ok = await viaProxy('sshbox');
    assert.equal(ok.stdout, 'over websocket from sshbox\n', ok.stderr);
    assert.equal(ok.exitCode, 0);
    const refused = await viaProxy('no-such-box');
    assert.equal(refused.exitCode, 255);
    assert.match(refused.stderr, /SANDBOX_NOT_FOUND/);
  });

  it('paramiko (an IDE-like client that is not OpenSSH) logs in, checks the host key and runs commands', async () => {
    const script = [
      'import paramiko, sys',
      'client = paramiko.SSHClient()',
      `client.load_host_keys("${knownHosts}")`,
      'client.set_missing_host_key_policy(paramiko.RejectPolicy())',
      `client.connect("127.0.0.1", port=${daemon.sshPort}, username="sshbox", key_filename="${key}", look_for_keys=False, allow_agent=False)`,
      'stdin, stdout, stderr = client.exec_command("cat; echo; hostname; exit 4")',
      'stdin.write("from paramiko"); stdin.channel.shutdown_write()',
      'print(stdout.read().decode(), end="")',
      'print("status", stdout.channel.recv_exit_status())',
      'client.close()',
    ].join('\n');
    const result = await new Promise<SshResult>((resolve) => {
      // Debian's python3, which python3-paramiko installs into (not a pyenv one earlier in PATH).
      const child = spawn('/usr/bin/python3', ['-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      child.on('close', (exitCode) => resolve({ exitCode, stdout, stderr }));
    });
    assert.equal(result.stdout, 'from paramiko\nsshbox\nstatus 4\n', result.stderr);
  });

  it('answers keepalives, and serves 100 concurrent sessions each with its own output', async () => {
    const alive = await ssh('sshbox', ['sleep 3; echo still here'], { options: ['-o', 'ServerAliveInterval=1', '-o', 'ServerAliveCountMax=1'] });
    assert.equal(alive.stdout, 'still here\n', alive.stderr);
    assert.equal(alive.exitCode, 0);
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => ssh('sshbox', [`echo session-${i}`])));
    for (const [i, result] of results.entries()) {
      assert.equal(result.stdout, `session-${i}\n`, result.stderr);
      assert.equal(result.exitCode, 0);
    }
  });

  it('refuses an unknown sandbox, a wrong key and another user\'s sandbox the same way', async () => {
    const bob = new Roost({ apiUrl: daemon.url, token: await daemon.createUserToken('ssh-bob') });
    await bob.sshKeys.add(readFileSync(`${otherKey}.pub`, 'utf8'));
    await bob.sandboxes.create({ name: 'bobs-box' });
    const attempts = [
      await ssh('no-such-box', ['true']),
      await ssh('sshbox', ['true'], { identity: otherKey }),
      await ssh('bobs-box', ['true']),
    ];
    for (const attempt of attempts) {
      assert.equal(attempt.exitCode, 255);
      assert.match(attempt.stderr, /Permission denied \(publickey\)/);
    }
    const own = await ssh('bobs-box', ['hostname'], { identity: otherKey });
    assert.equal(own.stdout, 'bobs-box\n');
    await bob.sandboxes.remove('bobs-box');
  });
});

describe('SSH gateway parts', () => {
  it('keeps its host keys across restarts', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'roost-hostkeys-'));
    const silent = { info() {}, warn() {}, error() {}, debug() {} };
    try {
      const first = await loadOrCreateHostKeys(dir, silent);
      const second = await loadOrCreateHostKeys(dir, silent);
      assert.deepEqual(second.map((k) => k.publicKey), first.map((k) => k.publicKey));
      assert.deepEqual(first.map((k) => k.type), ['ssh-ed25519', 'ssh-rsa']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reads box and box+user', () => {
    assert.deepEqual(parseSshUsername('dev'), { sandbox: 'dev', unixUser: 'root' });
    assert.deepEqual(parseSshUsername('dev+alice'), { sandbox: 'dev', unixUser: 'alice' });
    assert.equal(parseSshUsername('dev+'), undefined);
    assert.equal(parseSshUsername('dev+a b'), undefined);
  });

  it('limits failures per source within a window', () => {
    let now = 0;
    const limiter = new FailureLimiter({ maxFailures: 3, windowMs: 1000, now: () => now });
    for (let i = 0; i < 3; i++) limiter.fail('10.0.0.1');
    assert.equal(limiter.blocked('10.0.0.1'), true);
    assert.equal(limiter.blocked('10.0.0.2'), false);
    now = 1001;
    assert.equal(limiter.blocked('10.0.0.1'), false);
  });
});
