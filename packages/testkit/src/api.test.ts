// The HTTP API from the outside, on a daemon with the fake runtime: auth, errors, OpenAPI, tenants.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request as httpRequest } from 'node:http';
import { routes, type RouteSpec } from '@roost/contract';
import { Roost, RoostApiError } from '@roost/sdk';
import { startDaemon, type TestDaemon } from './start-daemon.js';

describe('HTTP API', () => {
  let daemon: TestDaemon;
  before(async () => {
    daemon = await startDaemon({ driver: 'fake' });
  });
  after(async () => {
    await daemon?.close();
  });

  it('answers /healthz without a token and tells loopback clients where the admin token is', async () => {
    const response = await fetch(`${daemon.url}/healthz`);
    assert.equal(response.status, 200);
    const body = (await response.json()) as { status: string; adminTokenFile?: string };
    assert.equal(body.status, 'ok');
    assert.match(body.adminTokenFile ?? '', /admin-token$/);
  });

  it('denies by default: every route fastify registered, upgrades included, answers 401 without a valid token unless the table marks it public', async () => {
    const publicPaths = new Set(Object.values(routes as Record<string, RouteSpec>).filter((route) => route.public).map((route) => route.path));
    const registered = daemon.daemon.httpRoutes;
    // The walk covers what the server really serves: every table route (and its HEAD twin) is there.
    for (const route of Object.values(routes as Record<string, RouteSpec>)) {
      assert.ok(registered.some((r) => r.method === route.method && r.url === toFastifyPath(route.path)), `${route.method} ${route.path} registered`);
    }
    assert.ok(registered.length > Object.keys(routes).length, 'HEAD routes are walked too');
    const unknown = { method: 'GET', url: '/api/v1/no-such-route' };
    for (const { method, url } of [...registered, unknown]) {
      const path = url.replace(/:\w+/g, 'x');
      const isPublic = publicPaths.has(url);
      const label = `${method} ${url}`;
      for (const headers of [{}, { authorization: 'Bearer roost_not-a-token' }, { authorization: `Basic ${daemon.adminToken}` }] as Record<string, string>[]) {
        const plain = await rawRequest(daemon.url, method, path, headers);
        const upgrade = await rawRequest(daemon.url, 'GET', path, { ...headers, ...websocketHeaders });
        if (isPublic) {
          // Positive control: public routes answer without a token; they do not upgrade.
          assert.equal(plain.status, 200, label);
          assert.equal(upgrade.status, 400, `${label} upgrade`);
          continue;
        }
        for (const [kind, answer] of [['plain', plain], ['upgrade', upgrade]] as const) {
          assert.equal(answer.status, 401, `${label} ${kind} ${JSON.stringify(headers)}`);
          if (method === 'HEAD' && kind === 'plain') continue; // a HEAD answer has no body
          const body = JSON.parse(answer.body) as { error: { code: string; hint: string } };
          assert.equal(body.error.code, 'UNAUTHENTICATED', label);
          assert.match(body.error.hint, /roost login/);
        }
      }
      if (isPublic) continue;
      // Positive control: the same request with a valid token gets past the auth hook.
      const token = { authorization: `Bearer ${daemon.adminToken}` };
      assert.notEqual((await rawRequest(daemon.url, method, path, token)).status, 401, `${label} with a token`);
      const upgraded = await rawRequest(daemon.url, 'GET', path, { ...token, ...websocketHeaders });
      // WebSocket routes: the ones of a sandbox answer 404 for sandbox "x"; a run needs none, so it switches.
      const webSocketUrls = new Set(Object.values(routes as Record<string, RouteSpec>).filter((route) => route.webSocket).map((route) => toFastifyPath(route.path)));
      const expected = url === toFastifyPath(routes.runWebSocket.path) ? 101 : webSocketUrls.has(url) || url === unknown.url ? 404 : 400;
      assert.equal(upgraded.status, expected, `${label} upgrade with a token`);
    }
  });

  it('serves the OpenAPI document generated from the same schemas', async () => {
    const document = (await (await fetch(`${daemon.url}/api/openapi.json`)).json()) as { openapi: string; paths: Record<string, unknown> };
    assert.equal(document.openapi, '3.1.0');
    assert.ok(document.paths['/api/v1/sandboxes/{ref}/exec']);
  });

  it('rejects an invalid name with 400 stating the rule, and bad bodies with VALIDATION_FAILED', async () => {
    await assert.rejects(daemon.sdk.sandboxes.create({ name: 'Not Valid' }), (error: RoostApiError) => {
      assert.equal(error.status, 400);
      assert.equal(error.code, 'INVALID_SANDBOX_NAME');
      assert.match(error.message, /lowercase letters, digits and "-"/);
      return true;
    });
    const response = await fetch(`${daemon.url}/api/v1/sandboxes`, {
      method: 'POST',
      headers: { authorization: `Bearer ${daemon.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ cpus: 'many' }),
    });
    assert.equal(response.status, 400);
    assert.equal(((await response.json()) as { error: { code: string } }).error.code, 'VALIDATION_FAILED');
  });

  it('keeps egress rules: normalised on create, replaced and cleared with PATCH, bad ones refused with nothing stored', async () => {
    const sandbox = await daemon.sdk.sandboxes.create({ name: 'rules', allowNet: ['Example.COM.', '203.0.113.7'], denyNet: ['*.bad.example'] });
    assert.deepEqual([sandbox.info.allowNet, sandbox.info.denyNet], [['example.com', '203.0.113.7/32'], ['*.bad.example']]);
    const replaced = await daemon.sdk.sandboxes.update('rules', { allowNet: ['198.51.100.0/24'] });
    assert.deepEqual([replaced.allowNet, replaced.denyNet], [['198.51.100.0/24'], ['*.bad.example']]);
    for (const bad of ['10.0.0.1/8', 'not a name', '1.2.3.4/33', '-x.example', '300.1.1.1']) {
      await assert.rejects(daemon.sdk.sandboxes.update('rules', { allowNet: [bad] }), (error: RoostApiError) => {
        assert.equal(error.status, 400);
        assert.equal(error.code, 'VALIDATION_FAILED');
        assert.match(error.message, /egress rule/);
        return true;
      });
    }
    assert.deepEqual((await daemon.sdk.sandboxes.get('rules')).info.allowNet, ['198.51.100.0/24']);
    const cleared = await daemon.sdk.sandboxes.update('rules', { clearNet: true });
    assert.deepEqual([cleared.allowNet, cleared.denyNet], [[], []]);
    await daemon.sdk.sandboxes.remove('rules');
  });

  it('keeps tokens hashed: the admin token appears nowhere in the database file', async () => {
    const { readFile } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const db = await readFile(join(daemon.dataDir, 'roost.db'));
    const wal = await readFile(join(daemon.dataDir, 'roost.db-wal')).catch(() => Buffer.alloc(0));
    assert.ok(!db.includes(daemon.adminToken) && !wal.includes(daemon.adminToken));
    const log = await readFile(daemon.logFile, 'utf8');
    assert.ok(!log.includes(daemon.adminToken), 'the token never reaches the log');
  });

  it('logs -f streams a live script\'s output as it comes, until the script ends', async () => {
    const run = daemon.sdk.run({ script: 'echo first; sleep 1; echo second', persistent: true });
    const runOutput = run.output();
    const first = await runOutput.next();
    assert.equal(new TextDecoder().decode(first.value?.data), 'first\n');
    const sandbox = (await daemon.sdk.sandboxes.list()).find((s) => s.persistent && s.status === 'running' && s.name !== 'private-box');
    assert.ok(sandbox, 'the run is live');
    let followed = '';
    for await (const chunk of daemon.sdk.logs(sandbox.id, { follow: true }).output()) followed += new TextDecoder().decode(chunk.data);
    assert.equal(followed, 'first\nsecond\n', 'the follower saw what came after it joined, and stopped at the end');
    for await (const _ of runOutput);
    await daemon.sdk.sandboxes.remove(sandbox.id);
  });

  it('answers unknown sandboxes with SANDBOX_NOT_FOUND and a hint', async () => {
    await assert.rejects(daemon.sdk.sandboxes.get('nope'), (error: RoostApiError) => {
      assert.equal(error.status, 404);
      assert.equal(error.code, 'SANDBOX_NOT_FOUND');
      assert.match(error.hint, /roost list/);
      return true;
    });
  });

  it("never shows one user's sandboxes to another", async () => {
    const mine = await daemon.sdk.sandboxes.create({ name: 'private-box' });
    const other = new Roost({ apiUrl: daemon.url, token: await daemon.createUserToken('mallory') });
    // Positive control: the owner's list shows it, so the empty list below is the tenant filter.
    assert.ok((await daemon.sdk.sandboxes.list({ all: true })).some((sandbox) => sandbox.id === mine.id));
    assert.deepEqual(await other.sandboxes.list({ all: true }), []);
    await assert.rejects(other.sandboxes.get(mine.id), { code: 'SANDBOX_NOT_FOUND' });
    await assert.rejects(other.sandboxes.remove('private-box'), { code: 'SANDBOX_NOT_FOUND' });
    await assert.rejects(other.exec(mine.id, ['true']).wait(), { code: 'SANDBOX_NOT_FOUND' });
    assert.equal((await daemon.sdk.sandboxes.get('private-box')).info.status, 'running');
    // The same name is free for another user.
    const theirs = await other.sandboxes.create({ name: 'private-box' });
    assert.notEqual(theirs.id, mine.id);
    await theirs.remove();
    await mine.remove();
  });

  it('keeps SSH keys per user: add, list, remove; bad keys, duplicates and other users\' keys refused', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'roost-keys-'));
    try {
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'alice@laptop', '-f', join(dir, 'key')]);
      const line = readFileSync(join(dir, 'key.pub'), 'utf8');
      const fingerprint = execFileSync('ssh-keygen', ['-l', '-f', join(dir, 'key.pub')], { encoding: 'utf8' }).split(' ')[1];
      const added = await daemon.sdk.sshKeys.add(line);
      assert.deepEqual([added.name, added.type, added.fingerprint], ['alice@laptop', 'ssh-ed25519', fingerprint]);
      assert.deepEqual((await daemon.sdk.sshKeys.list()).map((key) => key.fingerprint), [fingerprint]);
      assert.equal(added.alreadyRegistered, false);
      // Again, by its owner (also under another name): the same record, nothing added.
      const again = await daemon.sdk.sshKeys.add(line, { name: 'renamed' });
      assert.deepEqual(again, { ...added, alreadyRegistered: true });
      assert.equal((await daemon.sdk.sshKeys.list()).length, 1);

      const other = new Roost({ apiUrl: daemon.url, token: await daemon.createUserToken('key-bob') });
      const taken = await other.sshKeys.add(line).catch((error: Error) => error);
      assert.equal((taken as { code?: string }).code, 'SSH_KEY_TAKEN');
      // Whose it is stays unsaid: neither the owner's name nor an id of theirs.
      assert.doesNotMatch(JSON.stringify(taken) + (taken as Error).message, /admin|usr_|key_/);
      assert.deepEqual(await other.sshKeys.list(), []);
      await assert.rejects(other.sshKeys.remove(fingerprint), { code: 'SSH_KEY_NOT_FOUND' });

      for (const bad of ['hello', readFileSync(join(dir, 'key'), 'utf8'), line.replace(/AAAA\S{10}/, 'AAAA'), `ssh-rsa ${line.split(' ')[1]}`]) {
        await assert.rejects(daemon.sdk.sshKeys.add(bad), { code: 'INVALID_SSH_KEY' });
      }
      execFileSync('ssh-keygen', ['-q', '-t', 'ecdsa', '-N', '', '-C', 'alice@desktop', '-f', join(dir, 'second')]);
      const second = await daemon.sdk.sshKeys.add(readFileSync(join(dir, 'second.pub'), 'utf8'), { name: 'desktop' });
      assert.deepEqual((await daemon.sdk.sshKeys.list()).map((key) => [key.name, key.type]), [['alice@laptop', 'ssh-ed25519'], ['desktop', 'ecdsa-sha2-nistp256']]);
      await daemon.sdk.sshKeys.remove('alice@laptop');
      await daemon.sdk.sshKeys.remove(second.fingerprint);
      assert.deepEqual(await daemon.sdk.sshKeys.list(), []);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

const websocketHeaders = {
  connection: 'Upgrade',
  upgrade: 'websocket',
  'sec-websocket-version': '13',
  'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
};

function toFastifyPath(path: string): string {
  return path.replace(/\{(\w+)\}/g, ':$1');
}

/** One request on its own connection; resolves with the status and body of whatever answers (an upgrade that succeeds is cut). */
function rawRequest(base: string, method: string, path: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(new URL(path, base), { method, headers, agent: false }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
      response.on('error', reject);
    });
    request.on('upgrade', (response, socket) => {
      socket.destroy();
      resolve({ status: response.statusCode ?? 0, body: '' });
    });
    request.on('error', reject);
    request.end(method === 'POST' || method === 'PATCH' ? '{}' : undefined);
  });
}
