// The CLI against a hostile server: a tiny HTTP server that answers what a real roostd never
// would (token files that are not the daemon's, names and hosts that are ssh options or
// config lines). The real `roost` binary runs against it; a stand-in `ssh` records its argv.
import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { runCli } from '@roost/testkit';

const goodToken = `roost_${'A'.repeat(43)}`;
const hostKey = `ssh-ed25519 ${'AAAAC3NzaC1lZDI1NTE5AAAAI'}${'B'.repeat(43)}`;

interface Answers {
  health: Record<string, unknown>;
  sshInfo: Record<string, unknown>;
  sandboxes: Record<string, unknown>[];
}

function sandbox(name: string): Record<string, unknown> {
  return {
    id: 'sb_abc123', name, image: 'debian', status: 'running', statusReason: null, exitCode: null, persistent: true, cpus: 1, memoryMb: 1024,
    pidsLimit: 1024, openFiles: 65536, network: 'none', sshAgentForwarding: false, defaultUser: 'root', createdAt: new Date().toISOString(), updatedAt: new Date().toISOString(),
  };
}

describe('roost against a hostile server', () => {
  let server: Server;
  let url: string;
  let answers: Answers;
  /** Authorization headers the server received, to prove what the CLI sent. */
  let bearers: string[];
  const dir = mkdtempSync(join(tmpdir(), 'roost-trust-'));
  const bin = join(dir, 'bin');
  const sshArgs = join(dir, 'ssh-args');

  before(async () => {
    server = createServer((request: IncomingMessage, response) => {
      if (request.headers.authorization) bearers.push(request.headers.authorization);
      const path = (request.url ?? '').split('?')[0]!;
      const send = (body: unknown) => response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      if (path === '/healthz') return send(answers.health);
      if (path === '/api/v1/whoami') return send({ user: { id: 'u_1', name: 'admin', isAdmin: true } });
      if (path === '/api/v1/ssh') return send(answers.sshInfo);
      if (path === '/api/v1/ssh-keys') return send({ keys: [{ id: 'k_1', userId: 'u_1', name: 'k', type: 'ssh-ed25519', fingerprint: 'SHA256:x', createdAt: new Date().toISOString(), lastUsedAt: null }] });
      if (path === '/api/v1/sandboxes') return send({ sandboxes: answers.sandboxes });
      if (path.startsWith('/api/v1/sandboxes/')) return send(answers.sandboxes[0]);
      response.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'NOT_FOUND', message: 'no', hint: 'no' } }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    // A stand-in ssh that writes down how it was called.
    mkdirSync(bin);
    writeFileSync(join(bin, 'ssh'), `#!/bin/sh\nprintf '%s\\n' "$@" > ${sshArgs}\n`, { mode: 0o755 });
  });
  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  });
  beforeEach(() => {
    bearers = [];
    rmSync(sshArgs, { force: true });
    answers = { health: { status: 'ok', version: 'x', runtime: 'fake' }, sshInfo: { host: '127.0.0.1', port: 2222, hostKeys: [hostKey] }, sandboxes: [sandbox('dev')] };
  });

  describe('roost login and the admin token file /healthz names', () => {
    /** A data dir as roostd makes it: root's, 0700, with admin-token 0600 in it. */
    const dataDir = (name: string) => {
      const data = join(dir, name);
      mkdirSync(data, { mode: 0o700 });
      writeFileSync(join(data, 'admin-token'), `${goodToken}\n`, { mode: 0o600 });
      return data;
    };
    const login = (apiUrl = url) => runCli(['login', '--url', apiUrl]);

    it('reads a root-owned 0600 admin-token in the named data dir and sends it (positive control)', async () => {
      const data = dataDir('good');
      answers.health = { ...answers.health, dataDir: data, adminTokenFile: join(data, 'admin-token') };
      const result = await login();
      assert.equal(result.exitCode, 0, result.stderr);
      assert.deepEqual(bearers, [`Bearer ${goodToken}`]);
    });

    it('refuses a file that is a symlink, not 0600, not root\'s, hard-linked, not a token, or outside the data dir, and sends nothing', async () => {
      // What a hostile server would love root to send it: a root-owned 0600 secret.
      const secret = join(dir, 'id_ed25519');
      writeFileSync(secret, `${goodToken}\n`, { mode: 0o600 });
      const cases: [string, (data: string) => void | Record<string, unknown>, RegExp][] = [
        ['symlink', (data) => { rmSync(join(data, 'admin-token')); symlinkSync(secret, join(data, 'admin-token')); }, /symbolic link/],
        ['mode 0644', (data) => chmodSync(join(data, 'admin-token'), 0o644), /mode is 0644/],
        ['not root\'s', (data) => chownSync(join(data, 'admin-token'), 65534, 65534), /owned by uid 65534/],
        ['hard link', (data) => { rmSync(join(data, 'admin-token')); linkSync(secret, join(data, 'admin-token')); }, /hard links/],
        ['not a token', (data) => writeFileSync(join(data, 'admin-token'), '-----BEGIN OPENSSH PRIVATE KEY-----\n'), /does not hold a Roost token/],
        ['group-writable data dir', (data) => chmodSync(data, 0o770), /only root may write/],
        ['file outside the data dir', () => ({ adminTokenFile: secret }), /where roostd writes it/],
        ['another name in the data dir', (data) => { writeFileSync(join(data, 'id_rsa'), goodToken, { mode: 0o600 }); return { adminTokenFile: join(data, 'id_rsa') }; }, /where roostd writes it/],
        ['relative data dir', () => ({ dataDir: 'data', adminTokenFile: 'data/admin-token' }), /absolute, normalized/],
        ['dot-dot in the data dir', (data) => ({ dataDir: `${data}/../${data.split('/').pop()}`, adminTokenFile: `${data}/../${data.split('/').pop()}/admin-token` }), /absolute, normalized/],
      ];
      for (const [index, [what, arrange, expected]] of cases.entries()) {
        const data = dataDir(`bad-${index}`);
        const override = arrange(data) ?? {};
        answers.health = { status: 'ok', version: 'x', runtime: 'fake', dataDir: data, adminTokenFile: join(data, 'admin-token'), ...override };
        bearers = [];
        const result = await login();
        assert.equal(result.exitCode, 1, `${what}: ${result.stderr}`);
        assert.match(result.stderr, expected, what);
        assert.match(result.stderr, /pass --token/i, what);
        assert.deepEqual(bearers, [], `${what}: nothing was sent`);
      }
    });

    it('reads no file for a URL that is not loopback, and does not even ask that server', async () => {
      // TEST-NET-1: never routed; the CLI must refuse before any request.
      const result = await login('http://192.0.2.1:7070');
      assert.equal(result.exitCode, 2, result.stderr);
      assert.match(result.stderr, /not on this host .*pass --token/);
    });
  });

  describe('names and hosts from the server, before ssh and ssh-config', () => {
    const env = () => ({ ROOST_API_URL: url, ROOST_API_TOKEN: goodToken, PATH: `${bin}:${process.env.PATH}` });

    it('passes checked values to ssh and into ssh-config (positive control)', async () => {
      const ssh = await runCli(['ssh', 'dev', '--', 'uname'], { env: env() });
      assert.equal(ssh.exitCode, 0, ssh.stderr);
      const args = readFileSync(sshArgs, 'utf8').split('\n');
      assert.deepEqual(args.slice(args.indexOf('--')), ['--', 'dev@127.0.0.1', 'uname', '']);
      const config = await runCli(['ssh-config'], { env: env() });
      assert.equal(config.exitCode, 0, config.stderr);
      assert.match(config.stdout, /^Host roost-\*\n {2}ProxyCommand \S+ \S+ proxy --host-prefix roost- %n\n {2}HostKeyAlias \[127\.0\.0\.1\]:2222\n/m);
    });

    const hostile: [string, (a: Answers) => void, RegExp][] = [
      ['a name that is an option', (a) => (a.sandboxes = [sandbox('-oProxyCommand=touch /tmp/roost-pwned')]), /sandbox name "-oProxyCommand/],
      ['a name with a config line', (a) => (a.sandboxes = [sandbox('dev\n  ProxyCommand touch /tmp/roost-pwned')]), /sandbox name "dev\\n/],
      ['a host that is an option', (a) => (a.sshInfo = { ...a.sshInfo, host: '-oProxyCommand=touch /tmp/roost-pwned' }), /SSH host "-oProxyCommand/],
      ['a host with a config line', (a) => (a.sshInfo = { ...a.sshInfo, host: 'example.com\nProxyCommand touch /tmp/roost-pwned' }), /SSH host "example\.com\\n/],
      ['a port out of range', (a) => (a.sshInfo = { ...a.sshInfo, port: 70000 }), /SSH port 70000/],
      ['a port that is text', (a) => (a.sshInfo = { ...a.sshInfo, port: '22 -oProxyCommand=x' }), /SSH port "22 -oProxyCommand/],
      ['a host key with a second known_hosts line', (a) => (a.sshInfo = { ...a.sshInfo, hostKeys: [`${hostKey}\n@cert-authority * ${hostKey}`] }), /SSH host key/],
    ];
    for (const [what, arrange, expected] of hostile) {
      it(`refuses ${what}: ssh never runs and ssh-config prints nothing`, async () => {
        arrange(answers);
        const ssh = await runCli(['ssh', 'dev', '--', 'true'], { env: env() });
        assert.equal(ssh.exitCode, 1, ssh.stderr);
        assert.match(ssh.stderr, expected);
        assert.equal(existsSync(sshArgs), false, 'ssh was not run');
        const config = await runCli(['ssh-config'], { env: env() });
        assert.equal(config.exitCode, 1);
        assert.match(config.stderr, expected);
        assert.equal(config.stdout, '');
        assert.doesNotMatch(config.stdout + ssh.stdout, /ProxyCommand/);
      });
    }

    it('refuses a sandbox argument or +user that would be an ssh option', async () => {
      for (const target of ['-oProxyCommand=x', 'dev+-oProxyCommand=x', 'dev+a b']) {
        const result = await runCli(['ssh', target], { env: env() });
        assert.equal(result.exitCode, 2, `${target}: ${result.stderr}`);
        assert.equal(existsSync(sshArgs), false);
      }
    });
  });
});
