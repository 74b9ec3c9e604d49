// A hostile process inside a sandbox plays `roost-relay listen` (it can reach the relay's stdio):
// an oversized frame, connection opens by the hundred thousand without reading its input, and
// DATA ignoring the window. roostd (here, this process) stops that relay with a log line, its
// memory stays bounded, and the runtime keeps working. Real engine, real sandbox.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import type { Logger, Runtime } from '@roost/core';
import { createOciRuntime } from './driver.js';
import { createImageStore } from './images.js';
import { RELAY_INITIAL_WINDOW } from './relay-protocol.js';
import { RELAY_MAX_CONNECTIONS, relayListener } from './relay-streams.js';

const MB = 1024 * 1024;

/**
 * Speaks the relay's framing on stdout: LISTENING, one well-formed connection that says
 * "hello" (the positive control: the frames are understood), then the attack named in argv[1].
 * It never reads its stdin.
 */
const HOSTILE_RELAY = String.raw`
import struct, sys
out = sys.stdout.buffer
def frame(kind, conn, payload=b""):
    out.write(struct.pack(">BII", kind, conn, len(payload)) + payload)
def peer(port): return struct.pack(">H", port) + b"10.0.0.9"
frame(1, 0, struct.pack(">H", 4242) + b"127.0.0.1")
frame(2, 1, peer(5555)); frame(3, 1, b"hello")
out.flush()
mode = sys.argv[1]
if mode == "oversized":
    out.write(struct.pack(">BII", 3, 1, 0xFFFFFFFF))
    junk = b"x" * 65536
    for _ in range(4096): out.write(junk)
elif mode == "opens":
    for conn in range(2, 1000000): frame(2, conn, peer(conn % 65536))
elif mode == "window":
    frame(2, 2, peer(6666))
    data = b"y" * 32768
    for _ in range(10000): frame(3, 2, data)
out.flush()
`;

interface Captured {
  level: string;
  fields: Record<string, unknown>;
  msg: string;
}

describe('relay streams against a hostile relay inside a real sandbox', () => {
  let stateDir: string;
  let runtime: Runtime;
  const id = `sb_hostile${randomBytes(6).toString('hex')}`;
  const logged: Captured[] = [];
  const capture = (level: string) => (fields: Record<string, unknown>, msg: string) => void logged.push({ level, fields, msg });
  const log: Logger = { info: capture('info'), warn: capture('warn'), error: capture('error'), debug: capture('debug') };

  before(async () => {
    stateDir = await fs.mkdtemp(path.join(tmpdir(), 'roost-hostile-'));
    const images = createImageStore({ logger: log });
    await images.ensureDefaultImage();
    runtime = await createOciRuntime({ stateDir, images, logger: log });
    await runtime.create({ id, hostname: 'hostile', image: 'debian', limits: { cpus: 1, memoryMb: 256, pids: 64, openFiles: 1024 }, network: 'none', idRange: 0, env: {} });
  });
  after(async () => {
    await runtime?.destroy(id);
    await runtime?.close();
    await fs.rm(stateDir, { recursive: true, force: true });
  });

  /** Runs the hostile relay under relayListener, as runtime.listen() would, until roostd stops it. */
  async function attack(mode: string) {
    logged.length = 0;
    const proc = await runtime.exec(id, { command: ['python3', '-c', HOSTILE_RELAY, mode], stdin: true });
    const connections: Duplex[] = [];
    let hello = '';
    let helloPeer: { host: string; port: number } | undefined;
    const listener = await relayListener(
      proc,
      (stream, peer) => {
        connections.push(stream);
        if (connections.length !== 1) return; // the attack's connections are never read
        helloPeer = peer;
        stream.on('data', (chunk: Buffer) => (hello += chunk.toString()));
      },
      `hostile ${mode}`,
      log,
    );
    const rssBefore = process.memoryUsage().rss;
    let rssPeak = rssBefore;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), 20);
    const stopped = await Promise.race([
      listener.closed.then(() => true),
      new Promise<false>((resolve) => setTimeout(() => resolve(false), 60_000)),
    ]);
    clearInterval(sampler);
    if (!stopped) await listener.close();
    await proc.wait();
    const violations = logged.filter((l) => l.msg === 'relay protocol violation: stopping the relay').map((l) => String(l.fields.reason));
    return { stopped, listener, connections, hello, helloPeer, violations, rssGrowthMb: (rssPeak - rssBefore) / MB };
  }

  it('an oversized frame length stops the relay at the header, holding nothing of the 256 MiB behind it', async (t) => {
    const result = await attack('oversized');
    t.diagnostic(`oversized frame: stopped, roostd RSS peak +${result.rssGrowthMb.toFixed(1)} MiB`);
    assert.equal(result.listener.address && 'port' in result.listener.address && result.listener.address.port, 4242);
    assert.equal(result.hello, 'hello', 'positive control: well-formed frames are understood');
    assert.deepEqual(result.helloPeer, { host: '10.0.0.9', port: 5555 });
    assert.ok(result.stopped, 'the relay was stopped');
    assert.equal(result.violations.length, 1, 'one log line');
    assert.match(result.violations[0], /exceeds 65536/);
    assert.ok(result.rssGrowthMb < 64, `RSS grew ${result.rssGrowthMb.toFixed(1)} MiB`);
  });

  it('connection opens past the cap are refused, and a relay that does not read its input is stopped', async (t) => {
    const result = await attack('opens');
    const refused = logged.find((l) => l.msg === 'relay connections refused over the cap')?.fields.refused;
    t.diagnostic(`connection opens: ${result.connections.length} held, ${refused} refused, roostd RSS peak +${result.rssGrowthMb.toFixed(1)} MiB`);
    assert.equal(result.hello, 'hello');
    assert.equal(result.connections.length, RELAY_MAX_CONNECTIONS, 'roostd held no more connections than the cap');
    assert.ok(result.stopped, 'the relay was stopped');
    assert.equal(result.violations.length, 1);
    assert.match(result.violations[0], /does not read its input/);
    assert.ok(logged.some((l) => l.msg === 'relay connections refused over the cap' && Number(l.fields.refused) > 1000), 'refusals are logged with their count');
    assert.ok(result.connections.every((c) => c.destroyed), 'its connections were closed with it');
    assert.ok(result.rssGrowthMb < 64, `RSS grew ${result.rssGrowthMb.toFixed(1)} MiB`);
  });

  it('DATA past the window stops the relay: a connection nobody reads holds at most one window', async (t) => {
    const result = await attack('window');
    t.diagnostic(`DATA past the window: stopped, roostd RSS peak +${result.rssGrowthMb.toFixed(1)} MiB`);
    assert.equal(result.hello, 'hello');
    assert.ok(result.stopped, 'the relay was stopped');
    assert.equal(result.violations.length, 1);
    assert.match(result.violations[0], new RegExp(`the window is ${RELAY_INITIAL_WINDOW}`));
    // Without the check, the 312 MiB it sends would sit in the unread connection's buffer.
    assert.ok(result.rssGrowthMb < 64, `RSS grew ${result.rssGrowthMb.toFixed(1)} MiB`);
  });

  it('the runtime still works afterwards', async () => {
    const proc = await runtime.exec(id, { command: ['echo', 'still here'] });
    const chunks: Buffer[] = [];
    const read = (async () => {
      for await (const chunk of proc.stdout) chunks.push(chunk as Buffer);
    })();
    assert.equal((await proc.wait()).exitCode, 0);
    await read;
    assert.equal(Buffer.concat(chunks).toString(), 'still here\n');
  });
});
