// Attacks a real roostd from raw sockets and checks it survives: malformed requests, bad
// percent-escapes in every path segment, oversized headers, upgrades on every route, resets in
// the middle of requests, uploads, streams and upgrades, slow clients, floods of idle
// connections on the HTTP and SSH ports, then random mutations for ROOST_FUZZ_SECONDS (default
// 15; `npm run fuzz` runs 600). Afterwards /healthz answers, the daemon logged no internal
// error, and its open fds and RSS are back near where they started.
//
// The daemon runs in this process, so /proc/self is the daemon (plus this test's own sockets,
// all closed before each measurement). Nothing here blocks the event loop.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import { routes, type RouteSpec } from '@roost/contract';
import { startDaemon, type TestDaemon } from './start-daemon.js';

const fuzzSeconds = Number(process.env.ROOST_FUZZ_SECONDS ?? 15);
/** Short deadlines and small caps, so that the test sees them act within its minute. */
const limits = { headersTimeoutMs: 4000, requestTimeoutMs: 8000, maxConnections: 1500, maxConnectionsPerSource: 600 };

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

describe('roostd survives any client (HTTP surface, fake runtime)', () => {
  let daemon: TestDaemon;
  let port: number;
  let token: string;
  let baseline: Measure;
  const markers: string[] = [];

  before(async () => {
    daemon = await startDaemon({ driver: 'fake', workspaces: 'fake', config: { http: limits } });
    port = Number(new URL(daemon.url).port);
    token = daemon.adminToken;
    await daemon.sdk.sandboxes.create({ name: 'fuzz-box' });
    // Warm up every path once (lazy modules, JIT, pools) before taking the baseline.
    await healthz();
    await exchange(port, send(upgradeRequest('/api/v1/sandboxes/fuzz-box/ssh', token)), { timeoutMs: 2000 });
    await exchange(port, send('GARBAGE\r\n\r\n'));
    baseline = await settledMeasure();
  });

  after(async () => {
    await daemon?.close();
  });

  it('answers malformed request lines and headers with a 4xx (or closes), never a 5xx', async () => {
    const malformed: (string | Buffer)[] = [
      'GET\r\n\r\n',
      'GET /healthz\r\n\r\n',
      'GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n',
      'GET /healthz HTTP/1.1\nHost: x\n\n',
      'GET  /healthz  HTTP/1.1\r\nHost: x\r\n\r\n',
      'FOO /healthz HTTP/1.1\r\nHost: x\r\n\r\n',
      'GET /he lthz HTTP/1.1\r\nHost: x\r\n\r\n',
      '\x00\x01\x02\x03\r\n\r\n',
      'GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n',
      'GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n',
      'GET /healthz HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n',
      'GET /healthz HTTP/1.1\r\n\r\n',
      'GET http://elsewhere/healthz HTTP/1.1\r\nHost: x\r\n\r\n',
      'GET * HTTP/1.1\r\nHost: x\r\n\r\n',
      'OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n',
      'GET /%%%% HTTP/1.1\r\nHost: x\r\n\r\n',
      Buffer.concat([Buffer.from('GET /api/v1/sandboxes/'), Buffer.from([0xff, 0xfe, 0x80]), Buffer.from(' HTTP/1.1\r\nHost: x\r\n\r\n')]),
      `POST /api/v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${'$TOKEN'}\r\nContent-Length: -1\r\n\r\n`,
      `POST /api/v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $TOKEN\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`,
      `POST /api/v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $TOKEN\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      `POST /api/v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $TOKEN\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\n`,
      `POST /api/v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $TOKEN\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n`,
      `POST /api/v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $TOKEN\r\nContent-Type: application/json\r\nContent-Length: 99999999999999999999\r\n\r\n`,
      `POST /api/v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $TOKEN\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"__proto__"`,
      jsonPost('{"__proto__":{"isAdmin":true},"name":"poisoned"}'),
      jsonPost('{"constructor":{"prototype":{"isAdmin":true}},"name":"poisoned"}'),
      jsonPost(`${'['.repeat(10_000)}${']'.repeat(10_000)}`),
      jsonPost(`{"name":"${'\\u0000'.repeat(1000)}"}`),
      `POST /api/v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $TOKEN\r\nContent-Type: text/x-nonsense\r\nContent-Length: 2\r\n\r\n{}`,
      'GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: bogus\r\n\r\n',
      `POST /api/v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $TOKEN\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n[]`,
      'CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n',
      'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
      Buffer.concat([Buffer.from('160301020001', 'hex'), randomBytes(512)]),
      'GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGARBAGE / HTTP/1.1\r\n\r\n',
    ];
    const answers = await inBatches(malformed, 16, (payload) =>
      exchange(port, send(typeof payload === 'string' ? payload.replaceAll('$TOKEN', token) : payload)),
    );
    answers.forEach((answer, index) => {
      assertNoServerError(answer, `malformed #${index}`);
      assert.notEqual(answer.error, 'timeout', `malformed #${index}: answered or closed, not left hanging`);
    });
    // Positive control: the same server answers a well-formed request.
    assert.equal((await healthz()).status, 200);
    // The prototype-poisoning body created nothing and made nobody admin.
    assert.deepEqual((await daemon.sdk.sandboxes.list({ all: true })).map((sandbox) => sandbox.name), ['fuzz-box']);
  });

  it('answers a bad percent-escape in every path segment of every route with a 4xx JSON error, plain and as an upgrade', async () => {
    const badEscapes = ['%', '%4', '%zz', '%E0%A4%A', '%C0%AF', '%ED%A0%80', '%FF', '%00', '%2F..%2F', '%25%'];
    const requests: { label: string; payload: string }[] = [];
    for (const route of Object.values(routes as Record<string, RouteSpec>)) {
      const segments = route.path.replace('{ref}', 'fuzz-box').split('/');
      for (let index = 1; index < segments.length; index++) {
        for (const bad of badEscapes) {
          const path = segments.map((segment, i) => (i === index ? (route.path.split('/')[i]!.startsWith('{') ? bad : `${segment}${bad}`) : segment)).join('/');
          for (const auth of [undefined, token]) {
            requests.push({ label: `${route.method} ${path}`, payload: plainRequest(route.method, path, auth, '{}') });
            requests.push({ label: `upgrade ${path}`, payload: upgradeRequest(path, auth) });
          }
        }
      }
    }
    const answers = await inBatches(requests, 32, ({ payload }) => exchange(port, send(payload)));
    answers.forEach((answer, index) => {
      assert.ok(answer.status !== undefined, `${requests[index]!.label}: answered`);
      assertNoServerError(answer, requests[index]!.label);
      assert.ok(answer.status! >= 400, `${requests[index]!.label}: refused (${answer.status})`);
    });
    assert.ok(requests.length > 1000, `${requests.length} requests`);
  });

  it('refuses oversized headers with REQUEST_TOO_LARGE and oversized bodies before reading them', async () => {
    const big = 'a'.repeat(20 * 1024);
    const cases = [
      { label: 'one 20 KiB header', payload: `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${big}\r\n\r\n`, status: 431 },
      { label: '20 KiB URL', payload: `GET /api/v1/sandboxes/${big} HTTP/1.1\r\nHost: x\r\n\r\n`, status: 431 },
      // Node counts names and values only, not ": " and CRLF.
      { label: '3000 headers', payload: `GET /healthz HTTP/1.1\r\nHost: x\r\n${'X-Abcdefgh: 0123456789\r\n'.repeat(3000)}\r\n`, status: 431 },
      { label: '9 MiB body announced', payload: `POST /api/v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: ${9 * 1024 * 1024}\r\n\r\n`, status: 413 },
    ];
    for (const { label, payload, status } of cases) {
      const answer = await exchange(port, send(payload));
      assert.equal(answer.status, status, label);
      assert.equal(answer.json?.error.code, 'REQUEST_TOO_LARGE', label);
    }
    // A chunked body that never says its size is cut at the limit too.
    const chunked = await exchange(port, (socket) => {
      socket.write(`POST /api/v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`);
      const chunk = `${(64 * 1024).toString(16)}\r\n${' '.repeat(64 * 1024)}\r\n`;
      const pump = () => {
        while (socket.writable && socket.write(chunk));
      };
      socket.on('drain', pump);
      pump();
    }, { timeoutMs: 10_000 });
    assert.ok(chunked.status === 413 || (chunked.status === undefined && chunked.closedByServer), `chunked: ${chunked.status} ${chunked.error}`);
  });

  it('answers upgrades on every registered route: 401 without a token, 4xx for anything but a WebSocket to a sandbox of yours', async () => {
    const variants = ['websocket', 'WebSocket', 'h2c', 'garbage'];
    const requests: { label: string; payload: string; expectSwitch: boolean; auth?: string }[] = [];
    for (const { method, url } of daemon.daemon.httpRoutes) {
      const path = url.replace(':ref', 'fuzz-box');
      // Every WebSocket route switches for a sandbox of yours (fuzz-box) or needs none (runs).
      const isTunnel = (Object.values(routes) as RouteSpec[]).some((route) => route.webSocket && url === route.path.replace('{ref}', ':ref'));
      for (const upgrade of variants) {
        for (const auth of [undefined, 'roost_not-a-token', token]) {
          const upgradeMethod = method === 'HEAD' ? 'GET' : method;
          requests.push({
            label: `${upgradeMethod} ${path} Upgrade: ${upgrade} ${auth === token ? 'token' : auth ? 'bad token' : 'no token'}`,
            payload: upgradeRequest(path, auth, { method: upgradeMethod, upgrade }),
            expectSwitch: isTunnel && upgradeMethod === 'GET' && upgrade.toLowerCase() === 'websocket' && auth === token,
            auth,
          });
        }
      }
    }
    const answers = await inBatches(requests, 16, ({ payload }) => exchange(port, send(payload), { timeoutMs: 3000 }));
    answers.forEach((answer, index) => {
      const { label, expectSwitch, auth } = requests[index]!;
      if (expectSwitch) return assert.equal(answer.status, 101, label);
      assertNoServerError(answer, label);
      const isPublic = /\/healthz|openapi/.test(label);
      if (auth !== token && !isPublic) assert.equal(answer.status, 401, label);
      else assert.ok(answer.status! >= 400 && answer.status! < 500, `${label}: ${answer.status}`);
    });
    assert.ok(answers.some((answer) => answer.status === 101), 'positive control: the tunnel upgrades');
  });

  it('survives resets in the middle of requests, uploads, streams and upgrades; a reset stream kills its command', async () => {
    const marker = `fuzzmark${randomBytes(4).toString('hex')}`;
    markers.push(marker);
    const execBody = JSON.stringify({ command: ['sh', '-c', `exec yes ${marker}`] });
    const resets: ((socket: Socket) => void)[] = [];
    for (let i = 0; i < 50; i++) {
      resets.push((socket) => resetAfter(socket, 'GET /api/v1/sand'));
      resets.push((socket) =>
        resetAfter(socket, `POST /api/v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: ${1024 * 1024}\r\n\r\n{"script":"${'x'.repeat(256 * 1024)}`),
      );
      // Reset right after the request: the refusal (no token) or the upgrade is written to a dead socket.
      resets.push((socket) => resetAfter(socket, upgradeRequest('/api/v1/sandboxes/fuzz-box/ssh')));
      resets.push((socket) => resetAfter(socket, upgradeRequest('/api/v1/sandboxes/fuzz-box/ssh', token)));
      resets.push((socket) => resetAfter(socket, upgradeRequest('/api/v1/sandboxes/%E0%A4%A/ssh', token)));
      // Reset once the answer starts arriving.
      resets.push((socket) => {
        socket.write(upgradeRequest('/api/v1/sandboxes/fuzz-box/ssh', token));
        socket.once('data', () => socket.resetAndDestroy());
      });
      resets.push((socket) => {
        socket.write(upgradeRequest('/api/v1/sandboxes/fuzz-box/ssh'));
        socket.once('data', () => socket.resetAndDestroy());
      });
    }
    for (let i = 0; i < 10; i++) {
      resets.push((socket) => {
        socket.write(plainRequest('POST', '/api/v1/sandboxes/fuzz-box/exec', token, execBody));
        socket.once('data', () => socket.resetAndDestroy());
      });
    }
    await inBatches(resets, 24, (act) => exchange(port, act, { timeoutMs: 3000 }));
    assert.equal((await healthz()).status, 200);
    await waitFor(() => processesWith(marker) === 0, 10_000, `the exec'd "yes ${marker}" processes were killed when their client reset`);
  });

  it('forgets `logs -f` followers whose client left while the script was quiet', async () => {
    // A run whose script stays quiet after one line keeps its log live: a follower gets the line,
    // then waits for more output.
    let sandboxId = '';
    const run = connect(port, '127.0.0.1');
    await new Promise<void>((resolve) => {
      run.on('connect', () => run.write(plainRequest('POST', '/api/v1/runs', token, JSON.stringify({ script: 'echo started; exec sleep 120', persistent: true }))));
      run.on('data', (chunk: Buffer) => {
        sandboxId ||= /"id":"([^"]+)"/.exec(chunk.toString('latin1'))?.[1] ?? '';
        if (sandboxId) resolve();
      });
    });
    try {
      const follow = () => exchange(port, (socket) => {
        socket.write(plainRequest('GET', `/api/v1/sandboxes/${sandboxId}/logs?follow=true`, token));
        socket.once('data', () => socket.resetAndDestroy());
      });
      await inBatches(Array.from({ length: 50 }), 10, follow);
      const before = await settledMeasure();
      await inBatches(Array.from({ length: 1500 }), 20, follow);
      const now = await settledMeasure();
      const grownBytes = now.heapUsedBytes - before.heapUsedBytes;
      assert.ok(grownBytes < 4 * 1024 * 1024, `JS heap grew ${Math.round(grownBytes / 1024)} KiB after 1,500 abandoned followers`);
    } finally {
      run.destroy();
      await daemon.sdk.sandboxes.remove(sandboxId).catch(() => {});
    }
  });

  it('keeps its memory flat for a client that never reads a stream', async () => {
    const marker = `fuzzmark${randomBytes(4).toString('hex')}`;
    markers.push(marker);
    const before = rssKb();
    let socket: Socket | undefined;
    await new Promise<void>((resolve) => {
      socket = connect(port, '127.0.0.1', () => {
        socket!.write(plainRequest('POST', '/api/v1/sandboxes/fuzz-box/exec', token, JSON.stringify({ command: ['sh', '-c', `exec yes ${marker}`] })));
        socket!.once('data', () => {
          socket!.pause();
          resolve();
        });
      });
    });
    // `yes` writes ~GB/s; with backpressure the daemon holds a few socket buffers, not the output.
    await sleepWhile(3000);
    const grown = rssKb() - before;
    socket!.resetAndDestroy();
    assert.ok(grown < 64 * 1024, `RSS grew ${grown} KiB while a client did not read`);
    await waitFor(() => processesWith(marker) === 0, 10_000, 'the unread command is killed with its connection');
  });

  it('cuts slow clients (slowloris headers, trickled bodies) at their deadlines while serving others', async () => {
    const started = Date.now();
    const trickle = (head: string, every: string) => (socket: Socket) => {
      socket.write(head);
      const timer = setInterval(() => (socket.writable ? socket.write(every) : clearInterval(timer)), 200);
      socket.once('close', () => clearInterval(timer));
    };
    const slow = [
      ...Array.from({ length: 50 }, () => exchange(port, trickle('GET /healthz HTTP/1.1\r\nHost: x\r\n', 'X-A: b\r\n'), { timeoutMs: 30_000 })),
      ...Array.from({ length: 10 }, () =>
        exchange(port, trickle(`POST /api/v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{`, ' '), { timeoutMs: 30_000 }),
      ),
      // An upgrade whose headers never end is a slow request too.
      ...Array.from({ length: 10 }, () => exchange(port, trickle(upgradeRequest('/api/v1/sandboxes/fuzz-box/ssh', token).replace(/\r\n\r\n$/, '\r\n'), 'X-A: b\r\n'), { timeoutMs: 30_000 })),
    ];
    // While they trickle, others are served promptly.
    for (let i = 0; i < 5; i++) {
      const t0 = Date.now();
      assert.equal((await healthz()).status, 200);
      // Generous for a loaded 2-core box; it takes a few ms when the box is idle.
      assert.ok(Date.now() - t0 < 2000, 'healthz answers during the slowloris');
      await sleepWhile(300);
    }
    const answers = await Promise.all(slow);
    const elapsed = Date.now() - started;
    for (const answer of answers) {
      assert.equal(answer.status, 408, `slow client got ${answer.status} ${answer.error ?? ''}`);
      assert.equal(answer.json?.error.code, 'REQUEST_TIMEOUT');
    }
    assert.ok(elapsed < limits.requestTimeoutMs + 5000, `cut after ${elapsed} ms`);
  });

  it('caps idle connections per source and in total, cuts them at the headers deadline, and serves other sources meanwhile', async () => {
    const open = (source: string, count: number) => Promise.all(Array.from({ length: count }, () => idleConnection(port, source)));
    const first = await open('127.0.0.2', limits.maxConnectionsPerSource + 100);
    const openOf = (connections: IdleConnection[]) => connections.filter((c) => c.isOpen()).length;
    await waitFor(() => openOf(first) <= limits.maxConnectionsPerSource, 5000, () => `one source holds at most its cap (${openOf(first)} open)`);
    assert.equal(openOf(first), limits.maxConnectionsPerSource, 'up to the cap, connections are accepted');
    // Positive control for the cap being per source: another address is served right away.
    assert.equal((await healthz()).status, 200);
    const more = [...(await open('127.0.0.3', limits.maxConnectionsPerSource)), ...(await open('127.0.0.4', limits.maxConnectionsPerSource))];
    const all = [...first, ...more];
    await waitFor(() => openOf(all) <= limits.maxConnections, 5000, () => `at most the total cap is held (${openOf(all)} open)`);
    assert.ok(openOf(all) >= limits.maxConnections - 20, `${openOf(all)} held, cap ${limits.maxConnections}`);
    // Idle connections do not stay: the headers deadline closes every one (408).
    await waitFor(() => all.every((c) => !c.isOpen()), limits.headersTimeoutMs + 5000, 'the server closed every idle connection');
    assert.equal((await healthz()).status, 200);
  });

  it('survives thousands of idle raw TCP connections on the SSH port', async () => {
    const fdsBefore = openFds();
    const sockets = await Promise.all(Array.from({ length: 2000 }, (_, i) => idleConnection(daemon.sshPort, `127.0.1.${1 + (i % 200)}`)));
    // While they are held, the daemon still answers.
    assert.equal((await healthz()).status, 200);
    for (const socket of sockets) socket.close();
    await waitFor(() => openFds() <= fdsBefore + 2, 20_000, () => `fds back to ${fdsBefore} after the SSH connections closed (now ${openFds()})`);
  });

  it(`survives ${fuzzSeconds} s of random requests`, async () => {
    const paths = daemon.daemon.httpRoutes.map((route) => route.url.replace(':ref', 'fuzz-box'));
    const requestArb = fc.record({
      method: fc.constantFrom('GET', 'POST', 'PATCH', 'DELETE', 'HEAD', 'PUT', 'OPTIONS', 'G\x00T', 'CONNECT'),
      path: fc.oneof(fc.constantFrom(...paths), fc.constantFrom(...paths).chain((path) => mutated(path))),
      auth: fc.constantFrom<'none' | 'bad' | 'good'>('none', 'bad', 'good'),
      upgrade: fc.option(fc.constantFrom('websocket', 'h2c', '\x01')),
      headers: fc.array(fc.tuple(fc.string({ maxLength: 20 }), fc.string({ maxLength: 200 })), { maxLength: 5 }),
      contentType: fc.constantFrom('application/json', 'text/plain', 'application/json; charset=latin1', ''),
      body: fc.oneof(fc.json({ maxDepth: 4 }), fc.string({ maxLength: 300 }), fc.constant('')),
      cutAt: fc.option(fc.double({ min: 0, max: 1, noNaN: true })),
      reset: fc.boolean(),
    });
    const seed = Date.now() | 0;
    const until = Date.now() + fuzzSeconds * 1000;
    let sent = 0;
    for (let batch = 0; Date.now() < until; batch++) {
      const samples = fc.sample(requestArb, { seed: seed + batch, numRuns: 64 });
      const answers = await inBatches(samples, 32, (sample) => {
        const auth = sample.auth === 'good' ? token : sample.auth === 'bad' ? 'roost_bad' : undefined;
        const headers = sample.headers.map(([name, value]) => `${name}: ${value}`).join('\r\n');
        let payload = `${sample.method} ${sample.path} HTTP/1.1\r\nHost: x\r\nConnection: ${sample.upgrade ? 'Upgrade' : 'close'}\r\n`;
        if (sample.upgrade) payload += `Upgrade: ${sample.upgrade}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n`;
        if (auth) payload += `Authorization: Bearer ${auth}\r\n`;
        if (sample.contentType) payload += `Content-Type: ${sample.contentType}\r\n`;
        if (headers) payload += `${headers}\r\n`;
        payload += `Content-Length: ${Buffer.byteLength(sample.body)}\r\n\r\n${sample.body}`;
        const bytes = Buffer.from(payload);
        const cut = sample.cutAt === null ? bytes : bytes.subarray(0, Math.floor(bytes.length * sample.cutAt));
        return exchange(port, (socket) => (sample.reset ? resetAfter(socket, cut) : socket.write(cut)), { timeoutMs: 1500 });
      });
      answers.forEach((answer, index) => assertNoServerError(answer, `seed ${seed + batch} sample ${index}: ${JSON.stringify(samples[index])}`, samples[index]!.method === 'HEAD'));
      sent += samples.length;
      // Random requests may create sandboxes; keep the store small for the rest.
      for (const sandbox of await daemon.sdk.sandboxes.list({ all: true })) if (sandbox.name !== 'fuzz-box') await daemon.sdk.sandboxes.remove(sandbox.id);
    }
    assert.ok(sent > 0);
  });

  it('is still up afterwards, logged no internal error nor the token, and its fds and memory are back near where they started', async () => {
    assert.equal((await healthz()).status, 200);
    await waitFor(() => openFds() <= baseline.fds + 2, 20_000, () => `open fds back to ${baseline.fds} (now ${openFds()})`);
    for (const marker of markers) assert.equal(processesWith(marker), 0);
    const now = await settledMeasure();
    const kib = (bytes: number) => Math.round(bytes / 1024);
    process.stderr.write(
      `fuzz: fds ${baseline.fds} → ${now.fds}, RSS ${baseline.rssKb} → ${now.rssKb} KiB, JS heap ${kib(baseline.heapUsedBytes)} → ${kib(now.heapUsedBytes)} KiB\n`,
    );
    // The JS heap is where a leak per request or connection would show; RSS also keeps what
    // malloc holds on to after thousands of connections (20–45 MiB measured), so its bound is looser.
    assert.ok(now.heapUsedBytes - baseline.heapUsedBytes < 16 * 1024 * 1024, 'JS heap back near its start');
    assert.ok(now.rssKb - baseline.rssKb < 64 * 1024, `RSS grew ${now.rssKb - baseline.rssKb} KiB`);
    const logText = readFileSync(daemon.logFile, 'utf8');
    const log = logText.split('\n').filter(Boolean).map((line) => JSON.parse(line) as { level: number; msg: string });
    const errors = log.filter((line) => line.level >= 50);
    assert.deepEqual(errors.map((line) => line.msg), [], 'no internal error was logged');
    // Thousands of requests carried the token, many of them malformed: it never reached the log.
    assert.ok(!logText.includes(token), 'the token is not in the log');
  });

  function jsonPost(body: string): string {
    return `POST /api/v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $TOKEN\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  }

  async function healthz() {
    return exchange(port, send('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
  }
});

describe('roostd survives any client (SSH tunnels to a real sandbox, oci driver)', () => {
  let daemon: TestDaemon;
  let port: number;
  const tunnelPath = '/api/v1/sandboxes/fuzz-oci/ssh';

  before(async () => {
    daemon = await startDaemon({ driver: 'oci', config: { http: limits } });
    port = Number(new URL(daemon.url).port);
    await daemon.sdk.sandboxes.create({ name: 'fuzz-oci' });
  });

  after(async () => {
    await daemon?.close();
  });

  it('carries SSH over the tunnel, and survives resets, oversized and malformed WebSocket frames on it', async () => {
    const token = daemon.adminToken;
    // Positive control (and warm-up): the tunnel reaches the gateway, which greets first.
    const greeting = await tunnel(port, tunnelPath, token, (socket, banner) => {
      assert.match(banner.toString('latin1'), /^SSH-2\.0-/);
      socket.destroy();
    });
    assert.equal(greeting.status, 101);
    const baseline = await settledMeasure();

    const attacks: ((socket: Socket, banner: Buffer) => void)[] = [];
    for (let i = 0; i < 30; i++) {
      attacks.push((socket) => socket.resetAndDestroy());
      // Our SSH ident and half a packet, then a reset: the gateway is mid-handshake.
      attacks.push((socket) => socket.write(maskedFrame(Buffer.from('SSH-2.0-fuzz\r\n\x00\x00\x01\x00\x0a\x14')), () => socket.resetAndDestroy()));
      attacks.push((socket) => socket.write(Buffer.from([0x82, 0x85, 1, 2, 3]), () => socket.resetAndDestroy()));
    }
    const outcomes = await inBatches(attacks, 10, (attack) => tunnel(port, tunnelPath, token, attack));
    assert.ok(outcomes.every((outcome) => outcome.status === 101), 'every attack got its tunnel first');

    // A message over the 1 MiB limit is refused from its header, before any of it is buffered.
    const oversized = await tunnel(port, tunnelPath, token, (socket) => {
      const header = Buffer.alloc(14);
      header[0] = 0x82;
      header[1] = 0x80 | 127;
      header.writeBigUInt64BE(BigInt(2 * 1024 * 1024), 2);
      socket.write(header);
    });
    assert.equal(oversized.closeCode, 1009, 'closed with "message too big"');
    // Client frames must be masked (RFC 6455): an unmasked one is a protocol error.
    const unmasked = await tunnel(port, tunnelPath, token, (socket) => socket.write(Buffer.from([0x82, 0x03, 0x61, 0x62, 0x63])));
    assert.equal(unmasked.closeCode, 1002, 'closed with "protocol error"');

    assert.equal((await exchange(port, send('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'))).status, 200);
    assert.equal((await daemon.sdk.exec('fuzz-oci', ['true']).wait()).exitCode, 0, 'the sandbox behind the tunnels still works');
    await waitFor(() => openFds() <= baseline.fds + 2, 20_000, () => `open fds back to ${baseline.fds} (now ${openFds()})`);
    const log = readFileSync(daemon.logFile, 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line) as { level: number; msg: string });
    assert.deepEqual(log.filter((line) => line.level >= 50).map((line) => line.msg), [], 'no internal error was logged');
  });
});

/** Opens the SSH tunnel on a raw socket; once the gateway's first message (its SSH banner) arrives, `act` takes over. Resolves when the socket closes. */
function tunnel(port: number, path: string, token: string, act: (socket: Socket, banner: Buffer) => void): Promise<{ status?: number; closeCode?: number }> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(upgradeRequest(path, token)));
    let data = Buffer.alloc(0);
    let status: number | undefined;
    let closeCode: number | undefined;
    let acted = false;
    const timer = setTimeout(() => socket.destroy(), 10_000);
    socket.on('data', (chunk: Buffer) => {
      data = Buffer.concat([data, chunk]);
      if (status === undefined) {
        const headerEnd = data.indexOf('\r\n\r\n');
        if (headerEnd < 0) return;
        status = Number(/^HTTP\/1\.1 (\d{3})/.exec(data.toString('latin1'))?.[1]);
        data = data.subarray(headerEnd + 4);
      }
      // Server frames are unmasked; the gateway's are small (length < 126) until keys are exchanged.
      while (data.length >= 2 && (data[1]! & 0x7f) < 126 && data.length >= 2 + (data[1]! & 0x7f)) {
        const length = data[1]! & 0x7f;
        const payload = data.subarray(2, 2 + length);
        if ((data[0]! & 0x0f) === 0x8 && length >= 2) closeCode = payload.readUInt16BE(0);
        if ((data[0]! & 0x0f) === 0x2 && !acted) {
          acted = true;
          act(socket, payload);
        }
        data = data.subarray(2 + length);
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ status, closeCode });
    });
  });
}

/** A client → server binary frame (clients must mask). */
function maskedFrame(payload: Buffer): Buffer {
  const mask = randomBytes(4);
  const masked = Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]!));
  return Buffer.concat([Buffer.from([0x82, 0x80 | payload.length]), mask, masked]);
}

interface Measure {
  fds: number;
  rssKb: number;
  heapUsedBytes: number;
}

/** Fds and memory once the collector has run and the event loop had a moment to close what it may. */
async function settledMeasure(): Promise<Measure> {
  await sleepWhile(200);
  gc();
  await sleepWhile(100);
  gc();
  return { fds: openFds(), rssKb: rssKb(), heapUsedBytes: process.memoryUsage().heapUsed };
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

function rssKb(): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1]);
}

/** Host processes whose command line contains the marker (the fake runtime runs execs on the host). */
function processesWith(marker: string): number {
  let count = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(marker)) count++;
    } catch {
      // gone meanwhile
    }
  }
  return count;
}

interface Exchange {
  status?: number;
  headers: string;
  body: string;
  json?: { error: { code: string } };
  closedByServer: boolean;
  error?: string;
}

/** One raw connection: `act` writes what it likes; resolves with whatever came back once a whole response arrived, the server closed, or the time ran out. */
function exchange(port: number, act: (socket: Socket) => void, opts: { localAddress?: string; timeoutMs?: number } = {}): Promise<Exchange> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1', localAddress: opts.localAddress });
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = (closedByServer: boolean, error?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ ...parseResponse(Buffer.concat(chunks)), closedByServer, error });
    };
    const timer = setTimeout(() => finish(false, 'timeout'), opts.timeoutMs ?? 5000);
    socket.on('connect', () => act(socket));
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      if (isComplete(Buffer.concat(chunks))) finish(false);
    });
    socket.on('end', () => finish(true));
    socket.on('close', () => finish(true));
    socket.on('error', (error) => finish(true, error.message));
  });
}

/** The response after any interim ones ("100 Continue"). */
function finalResponse(data: Buffer): Buffer {
  while (/^HTTP\/1\.1 1(0[02-9]|[1-9]\d)/.test(data.subarray(0, 12).toString('latin1'))) {
    const end = data.indexOf('\r\n\r\n');
    if (end < 0) break;
    data = data.subarray(end + 4);
  }
  return data;
}

function parseResponse(whole: Buffer): Omit<Exchange, 'closedByServer' | 'error'> {
  const data = finalResponse(whole);
  const text = data.toString('latin1');
  const headerEnd = text.indexOf('\r\n\r\n');
  const headers = headerEnd < 0 ? text : text.slice(0, headerEnd);
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1];
  const body = headerEnd < 0 ? '' : data.subarray(headerEnd + 4).toString('utf8');
  let json: Exchange['json'];
  if (/content-type: application\/json/i.test(headers)) {
    try {
      json = JSON.parse(body.slice(0, contentLength(headers) ?? body.length)) as Exchange['json'];
    } catch {
      json = undefined;
    }
  }
  return { status: status === undefined ? undefined : Number(status), headers, body, json };
}

function contentLength(headers: string): number | undefined {
  const match = /\r\ncontent-length: *(\d+)/i.exec(headers);
  return match ? Number(match[1]) : undefined;
}

function isComplete(whole: Buffer): boolean {
  const data = finalResponse(whole);
  const headerEnd = data.indexOf('\r\n\r\n');
  if (headerEnd < 0) return false;
  const headers = data.subarray(0, headerEnd).toString('latin1');
  if (/^HTTP\/1\.1 101/.test(headers)) return true;
  const length = contentLength(headers);
  if (/^HTTP\/1\.1 200/.test(headers) && /vnd\.roost\.stream/.test(headers)) return data.length > headerEnd + 4;
  if (/\r\ntransfer-encoding: chunked/i.test(headers)) return data.subarray(headerEnd).includes('\r\n0\r\n\r\n');
  return length !== undefined && data.length >= headerEnd + 4 + length;
}

/** Never a 5xx; a refusal carries the API's error body. No answer at all is fine (a connection cut for bad bytes). */
function assertNoServerError(answer: Exchange, label: string, isHead = /^HEAD /.test(label)): void {
  if (answer.status === undefined) return;
  assert.ok(answer.status < 500, `${label}: ${answer.status} ${answer.body.slice(0, 200)}`);
  if (answer.status >= 400 && /content-type: application\/json/i.test(answer.headers) && !isHead) {
    assert.match(answer.json?.error.code ?? '', /^[A-Z_]+$/, `${label}: error body ${answer.body.slice(0, 200)}`);
  }
}

function send(payload: string | Buffer): (socket: Socket) => void {
  return (socket) => socket.write(payload);
}

function resetAfter(socket: Socket, payload: string | Buffer): void {
  socket.write(payload, () => socket.resetAndDestroy());
}

function plainRequest(method: string, path: string, token: string | undefined, body?: string): string {
  const withBody = method !== 'GET' && method !== 'HEAD' && body !== undefined;
  return [
    `${method} ${path} HTTP/1.1`,
    'Host: x',
    'Connection: close',
    ...(token ? [`Authorization: Bearer ${token}`] : []),
    ...(withBody ? ['Content-Type: application/json', `Content-Length: ${Buffer.byteLength(body)}`] : []),
    '',
    withBody ? body : '',
  ].join('\r\n');
}

function upgradeRequest(path: string, token?: string, opts: { method?: string; upgrade?: string } = {}): string {
  return [
    `${opts.method ?? 'GET'} ${path} HTTP/1.1`,
    'Host: x',
    'Connection: Upgrade',
    `Upgrade: ${opts.upgrade ?? 'websocket'}`,
    'Sec-WebSocket-Version: 13',
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
    ...(token ? [`Authorization: Bearer ${token}`] : []),
    '',
    '',
  ].join('\r\n');
}

/** A path with one random change: a segment replaced by junk, a bad escape, dots, doubling. */
function mutated(path: string): fc.Arbitrary<string> {
  const segments = path.split('/');
  return fc.tuple(fc.nat({ max: segments.length - 1 }), fc.constantFrom('%', '%zz', '%E0%A4%A', '..', '', '%2F', 'x'.repeat(300), '\u00e9', '%00', '?a=%', '#', ';'), fc.boolean()).map(
    ([index, junk, append]) => segments.map((segment, i) => (i === index && i > 0 ? (append ? `${segment}${junk}` : junk) : segment)).join('/').replace(/[\s]/g, ''),
  );
}

interface IdleConnection {
  isOpen(): boolean;
  close(): void;
}

/** A connection that sends nothing and is left open until the server or `close()` ends it. */
function idleConnection(port: number, localAddress: string): Promise<IdleConnection> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1', localAddress });
    let open = false;
    const connection = { isOpen: () => open, close: () => socket.destroy() };
    socket.on('connect', () => {
      open = true;
      resolve(connection);
    });
    socket.on('data', () => {});
    socket.on('close', () => {
      open = false;
      resolve(connection);
    });
    socket.on('error', () => {});
  });
}

async function inBatches<T, R>(items: T[], concurrency: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) {
        const index = next++;
        results[index] = await work(items[index]!);
      }
    }),
  );
  return results;
}

async function waitFor(condition: () => boolean, timeoutMs: number, what: string | (() => string)): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting: ${typeof what === 'string' ? what : what()}`);
    await sleepWhile(50);
  }
}

/** Lets time pass with the event loop free (the daemon under test runs on it). */
function sleepWhile(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
