// The in-sandbox tools (/.roost/tools) against the real engine: what the conformance suite
// cannot ask of every driver — mount options, host isolation of forwarding, flow control,
// sftp-server, an image that is not Debian — and the figures docs/runtime-oci.md quotes.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import type { Logger, ProcessHandle, Runtime } from '@roost/core';
import { SHIFT_BASE } from './constants.js';
import { createOciRuntime } from './driver.js';
import { createImageStore, type ImageStore } from './images.js';
import { RELAY_INITIAL_WINDOW } from './relay-protocol.js';
import { findResidue } from './residue.js';
import { SANDBOX_TOOLS } from './tools.js';

const silent: Logger = { info() {}, warn() {}, error() {}, debug() {} };
const limits = { cpus: 1, memoryMb: 512, pids: 256, openFiles: 1024 };
const MB = 1024 * 1024;

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function run(runtime: Runtime, id: string, command: string[]) {
  const proc = await runtime.exec(id, { command });
  const [stdout, stderr, status] = await Promise.all([readAll(proc.stdout), readAll(proc.stderr), proc.wait()]);
  return { ...status, stdout: stdout.toString(), stderr: stderr.toString() };
}

/** Resolves with each line a stream prints, in order, as asked for. */
function lineReader(stream: Readable): () => Promise<string> {
  let text = '';
  const waiting: Array<(line: string) => void> = [];
  const flush = () => {
    let nl: number;
    while (waiting.length && (nl = text.indexOf('\n')) >= 0) {
      const line = text.slice(0, nl).replace(/\r$/, '');
      text = text.slice(nl + 1);
      waiting.shift()!(line);
    }
  };
  stream.on('data', (chunk: Buffer) => {
    text += chunk.toString();
    flush();
  });
  return () =>
    new Promise((resolve) => {
      waiting.push(resolve);
      flush();
    });
}

function median(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** A root filesystem with nothing but a static busybox, shifted like an image. */
async function makeBusyboxRootfs(dir: string): Promise<string> {
  const rootfs = path.join(dir, 'rootfs');
  for (const d of ['bin', 'etc', 'root', 'tmp']) await fs.mkdir(path.join(rootfs, d), { recursive: true });
  await fs.copyFile('/bin/busybox', path.join(rootfs, 'bin/busybox'));
  await fs.chmod(path.join(rootfs, 'bin/busybox'), 0o755);
  for (const applet of ['sh', 'tty', 'stty', 'nc', 'cat', 'echo', 'ls', 'test', 'sleep']) {
    await fs.symlink('busybox', path.join(rootfs, 'bin', applet));
  }
  await fs.chmod(path.join(rootfs, 'tmp'), 0o1777);
  const walk = async (p: string): Promise<void> => {
    await fs.lchown(p, SHIFT_BASE, SHIFT_BASE);
    if ((await fs.lstat(p)).isDirectory()) for (const e of await fs.readdir(p)) await walk(path.join(p, e));
  };
  await walk(rootfs);
  return rootfs;
}

/** SSH_FXP_INIT (version 3), as an SFTP client opens with. */
const SFTP_INIT = Buffer.from([0, 0, 0, 5, 1, 0, 0, 0, 3]);

/** Sends SSH_FXP_INIT and returns the server's SSH_FXP_VERSION packet. */
async function sftpHandshake(proc: ProcessHandle): Promise<{ type: number; version: number; extensions: string[] }> {
  // sftp-server drops unsent replies when its stdin ends: keep it open until the answer is in.
  proc.stdin!.write(SFTP_INIT);
  let reply = Buffer.alloc(0);
  for await (const chunk of proc.stdout) {
    reply = Buffer.concat([reply, chunk as Buffer]);
    if (reply.length >= 4 && reply.length >= 4 + reply.readUInt32BE(0)) break;
  }
  proc.stdin!.end();
  const extensions: string[] = [];
  for (let at = 9; at < 4 + reply.readUInt32BE(0); ) {
    const nameLength = reply.readUInt32BE(at);
    extensions.push(reply.subarray(at + 4, at + 4 + nameLength).toString());
    at += 4 + nameLength;
    at += 4 + reply.readUInt32BE(at);
  }
  return { type: reply[4], version: reply.readUInt32BE(5), extensions };
}

describe('in-sandbox tools (/.roost/tools) on the OCI driver', () => {
  let stateDir: string;
  let scratch: string;
  let runtime: Runtime;
  const made: string[] = [];
  let box: string;
  let busybox: string;

  const create = async (image: string) => {
    const id = `sb_tools${randomBytes(6).toString('hex')}`;
    made.push(id);
    await runtime.create({ id, hostname: 'tools', image, limits, network: 'none', env: {}, idRange: made.length });
    return id;
  };

  before(async () => {
    assert.ok(existsSync('/bin/busybox'), 'a static busybox is needed: apt-get install -y busybox-static');
    stateDir = await fs.mkdtemp(path.join(tmpdir(), 'roost-tools-'));
    scratch = await fs.mkdtemp(path.join(tmpdir(), 'roost-tools-scratch-'));
    const busyboxRootfs = await makeBusyboxRootfs(scratch);
    const base = createImageStore({ logger: silent });
    await base.ensureDefaultImage();
    const images: ImageStore = {
      cacheDir: base.cacheDir,
      defaultImageRecipe: base.defaultImageRecipe,
      ensureDefaultImage: (o) => base.ensureDefaultImage(o),
      resolve: async (ref) => (ref === 'busybox' ? busyboxRootfs : base.resolve(ref)),
    };
    runtime = await createOciRuntime({ stateDir, images, logger: silent });
    box = await create('debian');
    busybox = await create('busybox');
  });

  after(async () => {
    for (const id of made) await runtime?.destroy(id);
    await runtime?.close();
    for (const id of made) assert.deepEqual(await findResidue(stateDir, id), [], `residue of ${id}`);
    await fs.rm(stateDir, { recursive: true, force: true });
    await fs.rm(scratch, { recursive: true, force: true });
  });

  it('mounts the tools read-only, nosuid and nodev', async () => {
    const mounts = await run(runtime, box, ['bash', '-c', 'grep " /.roost/tools " /proc/mounts; touch /.roost/tools/x 2>&1; ls /.roost/tools/bin']);
    assert.match(mounts.stdout, /\/\.roost\/tools \S+ (?=.*\bro\b)(?=.*\bnosuid\b)(?=.*\bnodev\b)/);
    assert.match(mounts.stdout, /Read-only file system/);
    assert.match(mounts.stdout, /roost-pty\nroost-relay\n/);
  });

  it('gives a terminal of unknown size (0x0, what ssh sends without a terminal) and clamps oversized ones', async () => {
    const unknown = await runtime.exec(box, { command: ['stty', 'size'], tty: { term: 'dumb', cols: 0, rows: 0 } });
    const [out, status] = await Promise.all([readAll(unknown.stdout), unknown.wait()]);
    assert.deepEqual([out.toString(), status.exitCode], ['0 0\r\n', 0]);
    const huge = await runtime.exec(box, { command: ['stty', 'size'], tty: { term: 'dumb', cols: 100_000, rows: 50 } });
    assert.equal((await readAll(huge.stdout)).toString(), '50 65535\r\n');
  });

  describe('forwarding stays inside the sandbox', () => {
    it("connect to 127.0.0.1 reaches the sandbox's loopback, not the host's", async () => {
      const host = createServer((socket) => socket.end('host-secret'));
      await new Promise<void>((resolve) => host.listen(0, '127.0.0.1', resolve));
      const port = (host.address() as { port: number }).port;
      try {
        await assert.rejects(runtime.connect(box, { host: '127.0.0.1', port }), { code: 'CONNECT_FAILED', message: `connect 127.0.0.1 port ${port}: Connection refused` });
      } finally {
        host.close();
      }
    });

    it("a listener in the sandbox opens no port on the host, and its unix socket is 0600", async () => {
      const listener = await runtime.listen(box, { address: { host: '127.0.0.1', port: 0 }, onConnection: (s) => s.end() });
      const sockPath = `/tmp/agent-${randomBytes(3).toString('hex')}.sock`;
      const agent = await runtime.listen(box, { address: { path: sockPath }, onConnection: (s) => s.end() });
      try {
        const port = (listener.address as { port: number }).port;
        const reached = await new Promise<string>((resolve) => {
          const socket = createConnection({ host: '127.0.0.1', port });
          socket.once('connect', () => {
            socket.destroy();
            resolve('connected');
          });
          socket.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
        });
        assert.equal(reached, 'ECONNREFUSED');
        assert.equal((await run(runtime, box, ['stat', '-c', '%a %U', sockPath])).stdout, '600 root\n');
      } finally {
        await listener.close();
        await agent.close();
      }
    });
  });

  it('a connection whose reader is slow holds back only itself, with bounded buffers', async () => {
    const streams: import('node:stream').Duplex[] = [];
    const listener = await runtime.listen(box, {
      address: { host: '127.0.0.1', port: 0 },
      onConnection(stream) {
        streams.push(stream);
        stream.on('error', () => {});
        if (streams.length === 1) return; // the first connection is not read, for now
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => stream.end(`answer ${Buffer.concat(chunks).toString()}`));
      },
    });
    try {
      const port = (listener.address as { port: number }).port;
      const client = await runtime.exec(box, {
        command: ['python3', '-c', [
          'import socket, threading',
          `a = socket.create_connection(("127.0.0.1", ${port}))`,
          `b = socket.create_connection(("127.0.0.1", ${port}))`,
          'def blast():',
          '    a.sendall(b"x" * 20_000_000); a.shutdown(socket.SHUT_WR)',
          'threading.Thread(target=blast).start()',
          'b.sendall(b"ping"); b.shutdown(socket.SHUT_WR)',
          'print(b.makefile("rb").read().decode(), flush=True)',
          'print(a.makefile("rb").read().decode(), flush=True)',
        ].join('\n')],
      });
      const nextLine = lineReader(client.stdout);
      assert.equal(await nextLine(), 'answer ping', 'the second connection is answered while the first is stalled');
      const stalled = streams[0];
      // What waits for the stalled reader: at most one window in its buffer.
      assert.ok(stalled.readableLength <= RELAY_INITIAL_WINDOW + 64 * 1024, `buffered ${stalled.readableLength} bytes`);
      let bytes = 0;
      stalled.on('data', (c: Buffer) => (bytes += c.length));
      stalled.on('end', () => stalled.end(`got ${bytes}`));
      assert.equal(await nextLine(), 'got 20000000');
      assert.equal((await client.wait()).exitCode, 0);
    } finally {
      await listener.close();
    }
  });

  it('relays 100 MB each way at a useful rate (figures in the test output)', async (t) => {
    const size = 100 * MB;
    // Sandbox -> daemon through `connect`: a server that sends 100 MB and closes.
    const sender = await runtime.exec(box, {
      command: ['python3', '-c', [
        'import socket',
        's = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); print(s.getsockname()[1], flush=True)',
        'c, _ = s.accept(); block = b"z" * (1 << 20)',
        `for _ in range(${size / MB}): c.sendall(block)`,
        'c.close()',
      ].join('\n')],
    });
    const port = Number(await lineReader(sender.stdout)());
    let started = performance.now();
    const down = await runtime.connect(box, { host: '127.0.0.1', port });
    down.end();
    let received = 0;
    for await (const chunk of down) received += (chunk as Buffer).length;
    const downMbps = size / MB / ((performance.now() - started) / 1000);
    await sender.wait();
    assert.equal(received, size);

    // Daemon -> sandbox through `connect`: a server that counts what it reads.
    const counter = await runtime.exec(box, {
      command: ['python3', '-c', [
        'import socket',
        's = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); print(s.getsockname()[1], flush=True)',
        'c, _ = s.accept(); n = 0',
        'while (d := c.recv(1 << 20)): n += len(d)',
        'c.sendall(str(n).encode()); c.close()',
      ].join('\n')],
    });
    const counterPort = Number(await lineReader(counter.stdout)());
    started = performance.now();
    const up = await runtime.connect(box, { host: '127.0.0.1', port: counterPort });
    const block = Buffer.alloc(MB, 'u');
    for (let i = 0; i < size / MB; i++) if (!up.write(block)) await new Promise((resolve) => up.once('drain', resolve));
    up.end();
    const counted = (await readAll(up)).toString();
    const upMbps = size / MB / ((performance.now() - started) / 1000);
    await counter.wait();
    assert.equal(counted, String(size));

    // Sandbox -> daemon through `listen` (framed, windowed).
    let listenBytes = 0;
    let listenDone!: () => void;
    const listenFinished = new Promise<void>((resolve) => (listenDone = resolve));
    const listener = await runtime.listen(box, {
      address: { host: '127.0.0.1', port: 0 },
      onConnection(stream) {
        stream.on('data', (c: Buffer) => (listenBytes += c.length));
        stream.on('end', () => {
          stream.end();
          listenDone();
        });
      },
    });
    started = performance.now();
    const lport = (listener.address as { port: number }).port;
    const push = await run(runtime, box, ['bash', '-c', `head -c ${size} /dev/zero > /dev/tcp/127.0.0.1/${lport}`]);
    await listenFinished;
    const listenMbps = size / MB / ((performance.now() - started) / 1000);
    await listener.close();
    assert.equal(push.exitCode, 0);
    assert.equal(listenBytes, size);

    // For scale: the same 100 MB as plain exec output.
    started = performance.now();
    const plain = await runtime.exec(box, { command: ['head', '-c', String(size), '/dev/zero'] });
    let plainBytes = 0;
    for await (const chunk of plain.stdout) plainBytes += (chunk as Buffer).length;
    const plainMbps = size / MB / ((performance.now() - started) / 1000);
    assert.equal(plainBytes, size);

    const figures = `relay 100 MiB: connect sandbox->daemon ${downMbps.toFixed(0)} MiB/s, daemon->sandbox ${upMbps.toFixed(0)} MiB/s; ` +
      `listen sandbox->daemon ${listenMbps.toFixed(0)} MiB/s; plain exec stdout ${plainMbps.toFixed(0)} MiB/s`;
    t.diagnostic(figures);
  });

  it('starts a terminal exec about as fast as a plain one; connect() latency (figures in the test output)', async (t) => {
    const time = async (tty: boolean) => {
      const samples: number[] = [];
      for (let i = 0; i < 12; i++) {
        const started = performance.now();
        const proc = await runtime.exec(box, { command: ['true'], ...(tty && { tty: { term: 'xterm', cols: 80, rows: 24 } }) });
        await Promise.all([readAll(proc.stdout), readAll(proc.stderr)]);
        assert.equal((await proc.wait()).exitCode, 0);
        if (i >= 2) samples.push(performance.now() - started);
      }
      return median(samples);
    };
    const plain = await time(false);
    const tty = await time(true);

    // One relay process per forwarded connection (ssh -L, direct-tcpip): what opening one costs.
    const listener = await runtime.listen(box, { address: { host: '127.0.0.1', port: 0 }, onConnection: (s) => s.end() });
    const port = (listener.address as { port: number }).port;
    const connectSamples: number[] = [];
    for (let i = 0; i < 12; i++) {
      const started = performance.now();
      const stream = await runtime.connect(box, { host: '127.0.0.1', port });
      if (i >= 2) connectSamples.push(performance.now() - started);
      stream.end();
      await readAll(stream);
    }
    await listener.close();

    t.diagnostic(`exec of true until its output ended, p50 of 10: plain ${plain.toFixed(1)} ms, with a terminal ${tty.toFixed(1)} ms; ` +
      `connect() until connected ${median(connectSamples).toFixed(1)} ms`);
    assert.ok(tty < plain + 50, `a terminal costs ${(tty - plain).toFixed(1)} ms more`);
  });

  describe('sftp-server with its own loader and libc', () => {
    it('answers SSH_FXP_INIT with version 3 and the OpenSSH extensions', async () => {
      const proc = await runtime.exec(box, { command: (runtime.info as { sftpServer: string[] }).sftpServer, stdin: true });
      const version = await sftpHandshake(proc);
      assert.equal(version.type, 2, 'SSH_FXP_VERSION');
      assert.equal(version.version, 3);
      assert.ok(version.extensions.includes('posix-rename@openssh.com'), version.extensions.join(','));
      assert.equal((await proc.wait()).exitCode, 0);
    });

    it('serves a real sftp client: put, ls, get, byte-exact', async () => {
      const engine = runtime.info.engine.split(' ')[0];
      const local = path.join(scratch, 'upload.bin');
      const back = path.join(scratch, 'download.bin');
      const content = randomBytes(3 * MB + 123);
      await fs.writeFile(local, content);
      const batch = `put ${local} /root/upload.bin\nls -l /root/upload.bin\nget /root/upload.bin ${back}\n`;
      const server = `${engine} --root ${path.join(stateDir, 'oci-state')} exec ${box} ${SANDBOX_TOOLS.sftpServer}`;
      const sftp = spawn('sftp', ['-b', '-', '-D', server], { stdio: ['pipe', 'pipe', 'pipe'] });
      sftp.stdin.end(batch);
      const [out, err, code] = await Promise.all([
        readAll(sftp.stdout),
        readAll(sftp.stderr),
        new Promise<number | null>((resolve) => sftp.on('exit', resolve)),
      ]);
      assert.equal(code, 0, err.toString());
      assert.match(out.toString(), new RegExp(`-rw-r--r-- +\\S+ root +root +${content.length} .*/root/upload\\.bin`));
      const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
      assert.equal(sha(await fs.readFile(back)), sha(content));
      const inside = await run(runtime, box, ['sha256sum', '/root/upload.bin']);
      assert.equal(inside.stdout.split(' ')[0], sha(content));
    });
  });

  describe('an image with nothing but a static busybox', () => {
    it('gets a terminal of the given size', async () => {
      const proc = await runtime.exec(busybox, { command: ['sh', '-c', 'tty; stty size; echo "$TERM"'], tty: { term: 'vt100', cols: 90, rows: 20 } });
      const [out, status] = await Promise.all([readAll(proc.stdout), proc.wait()]);
      assert.equal(status.exitCode, 0);
      assert.match(out.toString(), /^\/dev\/pts\/\d+\r\n20 90\r\nvt100\r\n$/);
    });

    it('forwards both ways (busybox nc on each end)', async () => {
      const server = await runtime.exec(busybox, { command: ['sh', '-c', 'echo hello-from-nc | nc -l -p 7001 127.0.0.1'] });
      let stream;
      for (let i = 0; ; i++) {
        // nc prints nothing when it listens: retry until it does.
        try {
          stream = await runtime.connect(busybox, { host: 'localhost', port: 7001 });
          break;
        } catch (error) {
          if (i > 100) throw error;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      }
      stream.end();
      assert.equal((await readAll(stream)).toString(), 'hello-from-nc\n');
      await server.wait();

      const listener = await runtime.listen(busybox, {
        address: { host: '127.0.0.1', port: 0 },
        onConnection(s) {
          const chunks: Buffer[] = [];
          s.on('data', (c: Buffer) => chunks.push(c));
          s.on('end', () => s.end(`heard ${Buffer.concat(chunks).toString().trim()}\n`));
        },
      });
      const port = (listener.address as { port: number }).port;
      const client = await run(runtime, busybox, ['sh', '-c', `echo hi | nc 127.0.0.1 ${port}`]);
      await listener.close();
      assert.equal(client.stdout, 'heard hi\n');
    });

    it('runs sftp-server without /etc/passwd', async () => {
      assert.equal((await run(runtime, busybox, ['test', '-e', '/etc/passwd'])).exitCode, 1);
      const proc = await runtime.exec(busybox, { command: [SANDBOX_TOOLS.sftpServer], stdin: true });
      const version = await sftpHandshake(proc);
      assert.deepEqual([version.type, version.version], [2, 3]);
    });
  });
});
