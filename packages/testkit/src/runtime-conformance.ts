// The Runtime port's conformance suite: every driver, and the fake, must pass it.
// With `isolation`, it also tries what a sandbox must not be able to do.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { networkInterfaces } from 'node:os';
import { after, before, describe, it } from 'node:test';
import type { Duplex, Readable } from 'node:stream';
import type { ProcessHandle, Runtime, SandboxSpec } from '@roost/core';

export interface RuntimeConformanceOpts {
  name: string;
  newRuntime(): Promise<{
    runtime: Runtime;
    image: string;
    cleanup(): Promise<void>;
    /** What a destroyed sandbox left on the host (mounts, veths, cgroups, dirs); checked when given. */
    residue?(id: string): Promise<string[]>;
  }>;
  /** Check namespaces, users, network and limits (real drivers only). */
  isolation: boolean;
  /** Whether a `tty` exec gets a real pseudo-terminal (size, resize, Ctrl-C); the fake has none. */
  realTerminal: boolean;
  /** Whether /proc (meminfo, cpuinfo, uptime) shows the sandbox's own limits (runtime-oci: LXCFS views). */
  procViews?: boolean;
}

async function collect(process: ProcessHandle) {
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  const reading = Promise.all([
    (async () => {
      for await (const chunk of process.stdout) stdout.push(chunk as Buffer);
    })(),
    (async () => {
      for await (const chunk of process.stderr) stderr.push(chunk as Buffer);
    })(),
  ]);
  const status = await process.wait();
  await reading;
  return { ...status, stdout: Buffer.concat(stdout), stderr: Buffer.concat(stderr) };
}

/** The first line a stream prints (e.g. the port a server in the sandbox bound). */
export function firstLine(stream: Readable): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const onData = (chunk: Buffer) => {
      text += chunk.toString();
      const nl = text.indexOf('\n');
      if (nl < 0) return;
      stream.off('data', onData);
      stream.pause();
      resolve(text.slice(0, nl).replace(/\r$/, ''));
    };
    stream.on('data', onData);
    stream.once('end', () => reject(new Error(`stream ended before a line: ${JSON.stringify(text)}`)));
  });
}

/** Everything a stream yields until its end. */
export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** A TCP server on 127.0.0.1 inside a sandbox: for each connection, reads to EOF, then
 *  answers "got " + the bytes upper-cased and closes. Prints its port first. */
const UPPERCASE_SERVER = [
  'import socket, threading',
  's = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()',
  'print(s.getsockname()[1], flush=True)',
  'def serve(c):',
  '    data = b""',
  '    while True:',
  '        d = c.recv(65536)',
  '        if not d: break',
  '        data += d',
  '    c.sendall(b"got " + data.upper()); c.close()',
  'while True:',
  '    c, _ = s.accept(); threading.Thread(target=serve, args=(c,)).start()',
].join('\n');

/** Inside a sandbox: two connections to `target` at once, their writes interleaved; prints
 *  each one's answer on its own line. */
const twoClients = (family: 'tcp' | 'unix', target: string) => [
  'import socket',
  family === 'tcp'
    ? `conns = [socket.create_connection(("127.0.0.1", ${target})) for _ in range(2)]`
    : `conns = [socket.socket(socket.AF_UNIX) for _ in range(2)]\nfor c in conns: c.connect(${JSON.stringify(target)})`,
  'for part in ("-1", "-2"):',
  '    conns[0].sendall(b"alpha" + part.encode()); conns[1].sendall(b"beta" + part.encode())',
  'for c in conns: c.shutdown(socket.SHUT_WR)',
  'for c in conns: print(c.makefile("rb").read().decode())',
].join('\n');

/** The listener side of the forwarding tests: answers like UPPERCASE_SERVER, naming the peer kind. */
function answerUppercase(stream: Duplex, peer?: { host: string; port: number }): void {
  const chunks: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => chunks.push(chunk));
  stream.on('end', () => stream.end(`${peer ? `tcp from ${peer.host}` : 'unix'}: ${Buffer.concat(chunks).toString().toUpperCase()}`));
  stream.on('error', () => {});
}

async function waitUntil(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

export function runtimeConformance(opts: RuntimeConformanceOpts): void {
  describe(`Runtime conformance: ${opts.name}`, () => {
    let runtime: Runtime;
    let image: string;
    let cleanup: () => Promise<void>;
    let residue: ((id: string) => Promise<string[]>) | undefined;
    const made: string[] = [];
    /** Each sandbox of the suite gets its own host id range, as the store would give. */
    let nextIdRange = 0;

    const spec = (overrides: Partial<SandboxSpec> = {}): SandboxSpec => ({
      id: `sb_conf${randomBytes(6).toString('hex')}`,
      hostname: 'conformance',
      image,
      limits: { cpus: 1, memoryMb: 256, pids: 128, openFiles: 4096 },
      network: 'none',
      env: { FROM_SPEC: 'spec-value' },
      idRange: nextIdRange++,
      ...overrides,
    });
    const create = async (overrides: Partial<SandboxSpec> = {}) => {
      const s = spec(overrides);
      made.push(s.id);
      await runtime.create(s);
      return s.id;
    };
    const sh = async (id: string, script: string, env?: Record<string, string>) =>
      collect(await runtime.exec(id, { command: ['bash', '-c', script], env }));

    let box: string;
    before(async () => {
      ({ runtime, image, cleanup, residue } = await opts.newRuntime());
      box = await create();
    });
    after(async () => {
      for (const id of made) await runtime?.destroy(id);
      await runtime?.close();
      await cleanup?.();
    });

    it('runs a command: stdout and stderr apart, exit code passed through', async () => {
      const result = await sh(box, 'echo hi; echo oops >&2; exit 7');
      assert.equal(result.stdout.toString(), 'hi\n');
      assert.equal(result.stderr.toString(), 'oops\n');
      assert.equal(result.exitCode, 7);
    });

    it('passes environment from the spec and from exec', async () => {
      const result = await sh(box, 'echo "$FROM_SPEC $FROM_EXEC"', { FROM_EXEC: 'exec-value' });
      assert.equal(result.stdout.toString(), 'spec-value exec-value\n');
    });

    it('connects stdin when asked, and gives EOF otherwise', async () => {
      const withInput = await runtime.exec(box, { command: ['bash', '-c', 'tr a-z A-Z'], stdin: true });
      assert.ok(withInput.stdin, 'stdin stream present');
      withInput.stdin.end('hello\n');
      assert.equal((await collect(withInput)).stdout.toString(), 'HELLO\n');
      const without = await sh(box, 'cat; echo eof');
      assert.equal(without.stdout.toString(), 'eof\n');
    });

    it('passes binary output byte-exact', async () => {
      const result = await sh(box, 'head -c 2000000 /dev/urandom > blob; sha256sum blob | cut -c1-64 >&2; cat blob');
      assert.equal(result.stdout.length, 2_000_000);
      assert.equal(createHash('sha256').update(result.stdout).digest('hex'), result.stderr.toString().trim());
    });

    it('streams large output with backpressure', async () => {
      const process = await runtime.exec(box, { command: ['bash', '-c', 'yes | head -c 200000000'] });
      let bytes = 0;
      for await (const chunk of process.stdout) {
        bytes += (chunk as Buffer).length;
        // A slow reader at first: the process must wait, not the memory grow.
        if (bytes < 2_000_000) await new Promise((resolve) => setTimeout(resolve, 1));
      }
      for await (const _ of process.stderr);
      assert.equal(bytes, 200_000_000);
      assert.equal((await process.wait()).exitCode, 0);
    });

    it('kill() ends a running command and its children', async () => {
      // A duration no other test uses: the fake runtime's `ps` sees every process of the host.
      const sleep = `sleep 100.${randomBytes(3).readUIntBE(0, 3)}`;
      const process = await runtime.exec(box, { command: ['bash', '-c', `${sleep}; echo never`] });
      setTimeout(() => process.kill('SIGKILL'), 200);
      const result = await collect(process);
      assert.equal(result.signal, 'SIGKILL');
      assert.equal(result.exitCode, 137);
      const left = await sh(box, `ps -eo args 2>/dev/null | grep -c "^${sleep}" || true`);
      assert.equal(left.stdout.toString().trim(), '0');
    });

    it('returns when a script ends even if it left background children', async () => {
      const started = Date.now();
      const result = await sh(box, 'sleep 100 & echo done');
      assert.equal(result.stdout.toString(), 'done\n');
      assert.ok(Date.now() - started < 5000);
    });

    it('freeze() stops every process of the sandbox where it is; thaw() lets them go on', async () => {
      const id = await create();
      const ticker = await runtime.exec(id, { command: ['bash', '-c', 'while :; do echo tick; sleep 0.05; done'] });
      let ticks = 0;
      ticker.stdout.on('data', (chunk: Buffer) => (ticks += chunk.toString().split('\n').length - 1));
      ticker.stderr.resume();
      try {
        const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
        // Reachable first: it ticks.
        await waitUntil(() => ticks >= 3, 'the ticker to tick');
        await runtime.freeze(id);
        await pause(150); // what was already in the pipe arrives
        const frozenAt = ticks;
        await pause(600);
        assert.equal(ticks, frozenAt, 'no tick while frozen');
        await runtime.thaw(id);
        await waitUntil(() => ticks >= frozenAt + 3, 'the ticker to tick again after thaw');
        await runtime.thaw(id); // idempotent on a running sandbox
        await assert.rejects(runtime.freeze('sb_confnotthere'), { code: 'SANDBOX_NOT_RUNNING' });
      } finally {
        await runtime.thaw(id).catch(() => {});
        ticker.kill();
        await ticker.wait().catch(() => {});
        await runtime.destroy(id);
      }
    });

    it('lists what it holds; destroy is idempotent; exec after destroy fails with SANDBOX_NOT_RUNNING', async () => {
      const id = await create();
      assert.ok((await runtime.list()).includes(id));
      await sh(id, 'echo made > /root/file');
      await runtime.destroy(id);
      await runtime.destroy(id);
      assert.ok(!(await runtime.list()).includes(id));
      if (residue) assert.deepEqual(await residue(id), []);
      await assert.rejects(runtime.exec(id, { command: ['true'] }), { code: 'SANDBOX_NOT_RUNNING' });
    });

    describe('terminal', () => {
      const tty = { term: 'xterm-256color', cols: 100, rows: 30 };

      it('sets TERM, passes the exit code, carries stdin, and offers resize()', async () => {
        const process = await runtime.exec(box, { command: ['bash', '-c', 'read line; echo "$TERM got:$line"; exit 3'], tty, stdin: true });
        assert.equal(typeof process.resize, 'function');
        process.stdin!.write('typed\n');
        const result = await collect(process);
        assert.equal(result.exitCode, 3);
        assert.match(result.stdout.toString(), /xterm-256color got:typed\r?\n/);
      });

      if (!opts.realTerminal) return;

      it('is a terminal of the given size, resized on request (the process sees SIGWINCH)', async () => {
        const process = await runtime.exec(box, {
          command: ['bash', '-c', 'tty; stty size; trap "stty size; kill \\$!; exit 0" WINCH; sleep 100 & echo ready; wait'],
          tty,
        });
        let text = '';
        const ended = new Promise((resolve) => process.stdout.once('end', resolve));
        const ready = new Promise<void>((resolve) => {
          process.stdout.on('data', (chunk: Buffer) => {
            text += chunk.toString();
            if (text.includes('ready\r\n')) resolve();
          });
        });
        await ready;
        process.resize!(132, 43);
        const status = await process.wait();
        await ended;
        const lines = text.split('\r\n').filter(Boolean);
        assert.deepEqual(status, { exitCode: 0 });
        assert.match(lines[0], /^\/dev\/pts\/\d+$/);
        assert.deepEqual(lines.slice(1), ['30 100', 'ready', '43 132']);
      });

      it('Ctrl-C (0x03 on stdin) interrupts the foreground process through the line discipline', async () => {
        const started = Date.now();
        const process = await runtime.exec(box, { command: ['sleep', '100'], tty, stdin: true });
        process.stdin!.write('\x03');
        const result = await collect(process);
        assert.deepEqual({ exitCode: result.exitCode, signal: result.signal }, { exitCode: 130, signal: 'SIGINT' });
        assert.ok(Date.now() - started < 10_000);
      });

      it('reports a signal death as the signal, and a missing command as 127', async () => {
        const killed = await collect(await runtime.exec(box, { command: ['bash', '-c', 'kill -TERM $$'], tty }));
        assert.deepEqual({ exitCode: killed.exitCode, signal: killed.signal }, { exitCode: 143, signal: 'SIGTERM' });
        const missing = await collect(await runtime.exec(box, { command: ['no-such-command'], tty }));
        assert.equal(missing.exitCode, 127);
        assert.match(missing.stdout.toString(), /no-such-command: No such file or directory/);
      });

      it('Ctrl-C in an interactive shell stops the foreground job, and the shell goes on', async () => {
        const shell = await runtime.exec(box, { command: ['bash', '-i'], tty, stdin: true });
        const ended = new Promise((resolve) => shell.stdout.once('end', resolve));
        let screen = '';
        const started = new Promise<void>((resolve) => {
          shell.stdout.on('data', (chunk: Buffer) => {
            screen += chunk.toString();
            if (/[\r\n]started\r\n/.test(screen)) resolve();
          });
        });
        shell.stdin!.write('python3 -c \'import time; print("started", flush=True); time.sleep(100)\'\n');
        await started;
        shell.stdin!.write('\x03');
        shell.stdin!.write('echo "after-$?"; exit 4\n');
        assert.equal((await shell.wait()).exitCode, 4);
        await ended;
        assert.match(screen, /KeyboardInterrupt/);
        assert.match(screen, /[\r\n]after-130\r\n/);
      });

      it('is an interactive shell: echo, prompt, exit status', async () => {
        const process = await runtime.exec(box, { command: ['bash', '-i'], tty, stdin: true });
        process.stdin!.write('echo $((6 * 7)); exit 5\n');
        const result = await collect(process);
        assert.equal(result.exitCode, 5);
        const screen = result.stdout.toString();
        assert.match(screen, /root@conformance:~# echo \$\(\(6 \* 7\)\); exit 5\r\n/, 'prompt and echoed input');
        assert.match(screen, /\r42\r\nexit\r\n$/);
      });
    });

    describe('forwarding (connect and listen from inside the sandbox)', () => {
      it('connect reaches a server on 127.0.0.1 inside the sandbox, both ways, with half-close', async () => {
        const server = await runtime.exec(box, { command: ['python3', '-c', UPPERCASE_SERVER] });
        try {
          const port = Number(await firstLine(server.stdout));
          const stream = await runtime.connect(box, { host: '127.0.0.1', port });
          // The server answers only after our EOF: the half-close must get through.
          stream.end('hello from outside');
          assert.equal((await readAll(stream)).toString(), 'got HELLO FROM OUTSIDE');
        } finally {
          server.kill();
          await server.wait();
        }
      });

      it('connect to a port nobody listens on fails with CONNECT_FAILED and says why', async () => {
        await assert.rejects(runtime.connect(box, { host: '127.0.0.1', port: 1 }), (error: Error & { code?: string }) => {
          assert.equal(error.code, 'CONNECT_FAILED');
          assert.match(error.message, /127\.0\.0\.1 port 1: (Connection refused|ECONNREFUSED)/);
          return true;
        });
      });

      it('listen on port 0 reports the bound port and keeps two concurrent connections apart', async () => {
        const listener = await runtime.listen(box, { address: { host: '127.0.0.1', port: 0 }, onConnection: answerUppercase });
        try {
          assert.ok('port' in listener.address && listener.address.port > 0, `bound ${JSON.stringify(listener.address)}`);
          const port = (listener.address as { port: number }).port;
          const result = await collect(await runtime.exec(box, { command: ['python3', '-c', twoClients('tcp', String(port))] }));
          assert.equal(result.stderr.toString(), '');
          assert.deepEqual(result.stdout.toString().trim().split('\n'), [
            'tcp from 127.0.0.1: ALPHA-1ALPHA-2',
            'tcp from 127.0.0.1: BETA-1BETA-2',
          ]);
        } finally {
          await listener.close();
        }
      });

      it('listens on a unix socket (agent forwarding) and removes it when closed', async () => {
        const path = `/tmp/roost-conformance-${randomBytes(4).toString('hex')}.sock`;
        const listener = await runtime.listen(box, { address: { path }, onConnection: answerUppercase });
        assert.deepEqual(listener.address, { path });
        const result = await collect(await runtime.exec(box, { command: ['python3', '-c', twoClients('unix', path)] }));
        assert.deepEqual(result.stdout.toString().trim().split('\n'), ['unix: ALPHA-1ALPHA-2', 'unix: BETA-1BETA-2']);
        await listener.close();
        await listener.closed;
        assert.equal((await sh(box, `test -e ${path} && echo left || echo removed`)).stdout.toString(), 'removed\n');
      });

      it('listen on a port already in use fails with LISTEN_FAILED and says why', async () => {
        const first = await runtime.listen(box, { address: { host: '127.0.0.1', port: 0 }, onConnection: answerUppercase });
        try {
          const port = (first.address as { port: number }).port;
          await assert.rejects(runtime.listen(box, { address: { host: '127.0.0.1', port }, onConnection: answerUppercase }), (error: Error & { code?: string }) => {
            assert.equal(error.code, 'LISTEN_FAILED');
            assert.match(error.message, /Address already in use|EADDRINUSE/);
            return true;
          });
        } finally {
          await first.close();
        }
      });
    });

    it('updateLimits() changes a running sandbox\'s cpu, memory and pids at once, open files for new processes', async () => {
      const live = await create({ limits: { cpus: 1, memoryMb: 128, pids: 64, openFiles: 1024 } });
      // A process that runs across the change keeps its open-files limit.
      const before = await runtime.exec(live, { command: ['bash', '-c', 'read; ulimit -n'], stdin: true });
      const changed = { cpus: 0.5, memoryMb: 200, pids: 77, openFiles: 2048 };
      await runtime.updateLimits(live, changed);
      before.stdin!.end('\n');
      const kept = await collect(before);
      if (opts.isolation) {
        assert.equal(kept.stdout.toString(), '1024\n');
        const inside = await sh(live, [
          'cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes',
          'cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max',
          'cat /sys/fs/cgroup/cpu.max 2>/dev/null || echo "$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"',
          'ulimit -n',
        ].join('; '));
        assert.equal(inside.stdout.toString(), `${200 * 1024 * 1024}\n77\n50000 100000\n2048\n`);
      }
      await assert.rejects(runtime.updateLimits('sb_confnotthere', changed), { code: 'SANDBOX_NOT_RUNNING' });
      await runtime.destroy(live);
    });

    if (!opts.isolation) return;

    it('has the spec hostname, root inside and not root outside, an init as PID 1', async () => {
      const result = await sh(box, 'hostname; id -u; cat /proc/1/cmdline | tr "\\0" " "');
      const [hostname, uid, init] = result.stdout.toString().split('\n');
      assert.equal(hostname, 'conformance');
      assert.equal(uid, '0');
      assert.match(init, /init/);
      const process = await runtime.exec(box, { command: ['sleep', '5'] });
      await new Promise((resolve) => setTimeout(resolve, 200));
      const hostUids = findHostUidsOf('sleep 5');
      process.kill('SIGKILL');
      await collect(process);
      assert.ok(hostUids.length > 0, 'found the process on the host');
      assert.ok(hostUids.every((uid) => uid !== 0), `host uid of sandbox root is ${hostUids.join(',')}, not 0`);
    });

    describe('escape attempts (each must fail)', () => {
      /** Runs `script` with `tool` and returns its output; a missing tool fails the test instead
       *  of passing as "blocked", and the script must fail for the kernel's reason. */
      const refused = async (tool: string, script: string, reason: RegExp) => {
        const result = await sh(box, `command -v ${tool} >/dev/null || { echo TOOL-MISSING; exit 0; }; ${script}; echo "exit=$?"`);
        const output = result.stdout.toString() + result.stderr.toString();
        assert.doesNotMatch(output, /TOOL-MISSING/, `${tool} is not in the image: this probe would prove nothing`);
        assert.match(output, /exit=[1-9]/, `"${script}" succeeded: ${output}`);
        assert.match(output, reason, `"${script}" failed for another reason than the kernel's refusal: ${output}`);
      };
      const denied = /Operation not permitted|permission denied|Permission denied|Read-only file system/i;

      it('cannot mount, unshare a new user namespace, or pivot', async () => {
        // Positive control: the same tools work where nothing forbids them.
        assert.match((await sh(box, 'unshare --help >/dev/null && python3 -c "import os; print(os.getpid() > 0)"')).stdout.toString(), /True/);
        await refused('mount', 'mount -t tmpfs none /mnt', denied);
        await refused('unshare', 'unshare -U -r true', denied);
        await refused('unshare', 'unshare -m true', denied);
        // unshare(CLONE_NEWUSER) through libc: the image's python (3.11) has no os.unshare.
        await refused('python3', `python3 -c 'import ctypes,os,sys; libc=ctypes.CDLL(None, use_errno=True); r=libc.unshare(0x10000000); print("unshare:", os.strerror(ctypes.get_errno()) if r else "ok"); sys.exit(1 if r else 0)'`, /unshare: Operation not permitted/);
        await refused('pivot_root', 'mkdir -p /tmp/newroot && pivot_root /tmp/newroot /tmp/newroot', denied);
      });

      it('runs with seccomp, no new privileges, and without CAP_SYS_ADMIN or CAP_SYS_MODULE', async () => {
        const status = (await sh(box, 'cat /proc/self/status')).stdout.toString();
        assert.match(status, /^Seccomp:\s+2$/m, 'a seccomp filter is on');
        assert.match(status, /^NoNewPrivs:\s+1$/m);
        const effective = BigInt(`0x${/^CapEff:\s+([0-9a-f]+)$/m.exec(status)?.[1]}`);
        assert.notEqual(effective, 0n, 'root inside keeps the harmless capabilities (the bits below are read from a real mask)');
        for (const [name, bit] of [['CAP_SYS_ADMIN', 21n], ['CAP_SYS_MODULE', 16n], ['CAP_SYS_PTRACE', 19n], ['CAP_NET_ADMIN', 12n], ['CAP_SYS_TIME', 25n]] as const) {
          assert.equal((effective >> bit) & 1n, 0n, `${name} is dropped`);
        }
      });

      it('sees masked and read-only kernel paths and no host devices', async () => {
        // Positive control: /proc and /sys are there and readable where they should be.
        assert.match((await sh(box, 'cat /proc/sys/kernel/ostype; ls /sys/class | head -1')).stdout.toString(), /^Linux\n\S+/);
        assert.equal((await sh(box, 'head -c 16 /proc/kcore 2>/dev/null | wc -c')).stdout.toString().trim(), '0');
        assert.equal((await sh(box, 'ls -A /sys/firmware 2>/dev/null | wc -l')).stdout.toString().trim(), '0');
        await refused('bash', 'echo 1 > /proc/sys/vm/drop_caches', denied);
        // Only a probe where the host has the file: a missing file is no refusal.
        if (existsSync('/proc/sysrq-trigger')) await refused('bash', 'echo b > /proc/sysrq-trigger', denied);
        const devices = (await sh(box, 'ls /dev')).stdout.toString().split('\n').filter(Boolean).sort();
        assert.ok(devices.includes('null') && devices.includes('urandom'), `the usual devices are there: ${devices.join(' ')}`);
        for (const device of devices) {
          assert.ok(
            ['console', 'core', 'fd', 'full', 'mqueue', 'null', 'ptmx', 'pts', 'random', 'shm', 'stderr', 'stdin', 'stdout', 'tty', 'urandom', 'zero'].includes(device),
            `unexpected device /dev/${device}`,
          );
        }
        await refused('mknod', 'mknod /tmp/sda b 8 0', denied);
      });
    });

    describe('forwarding as a user of the sandbox (ConnectOpts.user, ListenOpts.user)', () => {
      /** A unix socket only root may open (0600, root's), served by root inside the sandbox. */
      let rootOnly: ProcessHandle;
      const rootOnlyPath = `/run/roost-conformance-${randomBytes(4).toString('hex')}.sock`;
      before(async () => {
        rootOnly = await runtime.exec(box, {
          command: ['python3', '-c', [
            'import os, socket',
            `s = socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(rootOnlyPath)}); os.chmod(${JSON.stringify(rootOnlyPath)}, 0o600); s.listen()`,
            'print("ready", flush=True)',
            'while True:',
            '    c, _ = s.accept(); c.sendall(b"root-only\\n"); c.close()',
          ].join('\n')],
        });
        assert.equal(await firstLine(rootOnly.stdout), 'ready');
      });
      after(async () => {
        rootOnly.kill();
        await rootOnly.wait();
      });

      it('listens below port 1024 as root, and not as an unprivileged user (the kernel refuses it)', async () => {
        const asRoot = await runtime.listen(box, { address: { host: '127.0.0.1', port: 81 }, user: 'root', onConnection: answerUppercase });
        await asRoot.close();
        await assert.rejects(runtime.listen(box, { address: { host: '127.0.0.1', port: 82 }, user: 'nobody', onConnection: answerUppercase }), (error: Error & { code?: string }) => {
          assert.equal(error.code, 'LISTEN_FAILED');
          assert.match(error.message, /Permission denied|EACCES/);
          return true;
        });
        // Above 1024 the same user may listen: the refusal above was the port, not the user.
        const high = await runtime.listen(box, { address: { host: '127.0.0.1', port: 0 }, user: 'nobody', onConnection: answerUppercase });
        await high.close();
      });

      it("connects to root's 0600 unix socket as root, and not as an unprivileged user", async () => {
        const asRoot = await runtime.connect(box, { path: rootOnlyPath }, { user: 'root' });
        asRoot.end();
        assert.equal((await readAll(asRoot)).toString(), 'root-only\n');
        await assert.rejects(runtime.connect(box, { path: rootOnlyPath }, { user: 'nobody' }), (error: Error & { code?: string }) => {
          assert.equal(error.code, 'CONNECT_FAILED');
          assert.match(error.message, /Permission denied|EACCES/);
          return true;
        });
      });

      it('a unix listener of a user is owned by that user; an unknown user is USER_NOT_FOUND', async () => {
        const path = `/tmp/roost-conformance-${randomBytes(4).toString('hex')}.sock`;
        const listener = await runtime.listen(box, { address: { path }, user: 'nobody', onConnection: answerUppercase });
        try {
          assert.equal((await sh(box, `stat -c %U ${path}`)).stdout.toString(), 'nobody\n');
        } finally {
          await listener.close();
        }
        await assert.rejects(runtime.connect(box, { host: '127.0.0.1', port: 1 }, { user: 'no-such-user' }), { code: 'USER_NOT_FOUND' });
      });
    });

    it('reaps zombies', async () => {
      // The orphan's parent exits at once; the init must reap it after it ends.
      const result = await sh(box, '(sleep 0.2 &) ; sleep 1; ps -eo stat | grep -c "^Z" || true');
      assert.equal(result.stdout.toString().trim(), '0');
    });

    describe('network', () => {
      let server: Server;
      let port: number;
      before(async () => {
        server = createServer((socket) => socket.end('host-secret\n'));
        await new Promise<void>((resolve) => server.listen(0, '0.0.0.0', resolve));
        port = (server.address() as { port: number }).port;
      });
      after(() => new Promise<void>((resolve) => server.close(() => resolve())));

      const tryConnect = (id: string, host: string, to = port) =>
        sh(id, `timeout 2 bash -c 'exec 3<>/dev/tcp/${host}/${to} && cat <&3' && echo CONNECTED || echo REFUSED`);

      it("cannot reach the host's services on loopback or any host address", async () => {
        // Positive controls: the service answers from the host, and the probe connects inside the sandbox.
        const fromHost = await new Promise<string>((resolve, reject) => {
          const socket = connect(port, '127.0.0.1');
          const chunks: Buffer[] = [];
          socket.on('data', (chunk) => chunks.push(chunk));
          socket.on('end', () => resolve(Buffer.concat(chunks).toString()));
          socket.on('error', reject);
        });
        assert.equal(fromHost, 'host-secret\n');
        const inside = await sh(box, `python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",${port}));s.listen();c=s.accept()[0];c.send(b"inside\\n");c.close()' & for i in $(seq 50); do timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/${port} && cat <&3' 2>/dev/null && { echo CONNECTED; break; }; sleep 0.1; done; wait`);
        assert.match(inside.stdout.toString(), /inside\nCONNECTED/, 'the probe connects to a listener inside the sandbox');
        const hostAddresses = Object.values(networkInterfaces())
          .flat()
          .filter((a) => a && a.family === 'IPv4')
          .map((a) => a!.address);
        for (const host of ['127.0.0.1', ...hostAddresses]) {
          const result = await tryConnect(box, host);
          assert.match(result.stdout.toString(), /REFUSED/, `reached ${host}:${port}`);
          assert.doesNotMatch(result.stdout.toString(), /host-secret/);
        }
      });

      it('cannot reach another sandbox', async () => {
        const other = await create({ hostname: 'other' });
        const listener = await runtime.exec(other, {
          command: ['python3', '-c', 'import socket;s=socket.socket();s.bind(("0.0.0.0",8080));s.listen();print("up",flush=True)\nwhile True: c=s.accept()[0]; c.send(b"other-secret\\n"); c.close()'],
        });
        assert.equal(await firstLine(listener.stdout), 'up');
        const addr = (await sh(other, "ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1")).stdout.toString().trim();
        assert.match(addr, /^\d+\.\d+\.\d+\.\d+$/);
        // Positive control: the other sandbox's server answers on that address from inside it.
        assert.match((await tryConnect(other, addr, 8080)).stdout.toString(), /other-secret\nCONNECTED/);
        const result = await tryConnect(box, addr, 8080);
        assert.match(result.stdout.toString(), /REFUSED/);
        assert.doesNotMatch(result.stdout.toString(), /other-secret/);
        listener.kill('SIGKILL');
        await collect(listener);
        await runtime.destroy(other);
      });
    });

    it('configure() gives a made sandbox a new hostname, env and limits (a warm-pool claim)', async () => {
      const pooled = await create({ hostname: 'roost-pool', env: {} });
      const before = await sh(pooled, 'echo "$HOSTNAME"');
      assert.equal(before.stdout.toString(), 'roost-pool\n');
      const claimed = spec({ id: pooled, hostname: 'claimed-box', env: { CLAIMED: 'yes' }, limits: { cpus: 1, memoryMb: 200, pids: 100, openFiles: 2048 } });
      await runtime.configure(claimed);
      const after = await sh(pooled, 'echo "$HOSTNAME $CLAIMED"');
      assert.equal(after.stdout.toString(), 'claimed-box yes\n');
      if (opts.isolation) {
        const inside = await sh(pooled, [
          'hostname',
          'grep -c claimed-box /etc/hosts',
          'ulimit -n',
          'cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes',
          'cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max',
        ].join('; '));
        assert.equal(inside.stdout.toString(), `claimed-box\n1\n2048\n${200 * 1024 * 1024}\n100\n`);
      }
      await runtime.destroy(pooled);
    });

    if (opts.isolation) {
      it('sets the open-files limit, up to the most the host can give and not past it', async () => {
        const wanted = runtime.info.maxOpenFiles;
        await assert.rejects(
          create({ limits: { cpus: 1, memoryMb: 128, pids: 64, openFiles: wanted + 1 } }),
          new RegExp(`above this host's maximum of ${wanted}`),
        );
        const many = await create({ limits: { cpus: 1, memoryMb: 128, pids: 64, openFiles: wanted } });
        const result = await sh(many, 'ulimit -Sn; ulimit -Hn');
        assert.equal(result.stdout.toString(), `${wanted}\n${wanted}\n`);
        await runtime.destroy(many);
      });

      it('has no raw sockets (no forged packets) but ping sockets work, and no route out without NAT', async () => {
        const result = await sh(box, [
          `python3 -c 'import socket
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); print("raw: allowed")
except PermissionError: print("raw: denied")
socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP); print("ping socket: ok")'`,
          'ip route show default 2>/dev/null || cat /proc/net/route | awk \'$2 == "00000000"\'',
          'cat /etc/resolv.conf',
        ].join('; '));
        assert.equal(result.stderr.toString(), '');
        const lines = result.stdout.toString().split('\n');
        assert.deepEqual(lines.slice(0, 2), ['raw: denied', 'ping socket: ok']);
        assert.match(result.stdout.toString(), /# no network: this sandbox was made with --network none/);
        assert.doesNotMatch(result.stdout.toString(), /default|00000000/);
      });
    }

    it('applies the memory limit', async () => {
      const limited = await create({ limits: { cpus: 1, memoryMb: 96, pids: 64, openFiles: 1024 } });
      const result = await sh(limited, 'cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes');
      assert.equal(result.stdout.toString().trim(), String(96 * 1024 * 1024));
      // Allocating past it gets the process killed, not the host's memory used.
      const hog = await sh(limited, 'python3 -c "b = bytearray(200 * 1024 * 1024); print(len(b))"');
      assert.notEqual(hog.exitCode, 0);
      await runtime.destroy(limited);
    });

    if (opts.procViews) {
      it("shows its own limits in /proc: meminfo, cpuinfo and uptime, not the host's", async () => {
        const limited = await create({ limits: { cpus: 1, memoryMb: 200, pids: 64, openFiles: 1024 } });
        const result = await sh(limited, "awk '/^MemTotal:/ {print $2}' /proc/meminfo; grep -c ^processor /proc/cpuinfo; cut -d' ' -f1 /proc/uptime");
        const [memKb, cpus, uptime] = result.stdout.toString().trim().split('\n');
        assert.equal(memKb, String(200 * 1024));
        assert.equal(cpus, '1');
        const hostUptime = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
        assert.ok(Number(uptime) < 60 && hostUptime - Number(uptime) > 5, `uptime ${uptime}, host ${hostUptime}`);
        await runtime.destroy(limited);
      });
    }

    it('enforces the pids limit', async () => {
      const limited = await create({ limits: { cpus: 1, memoryMb: 128, pids: 20, openFiles: 1024 } });
      // python forks without bash's retry-with-backoff on EAGAIN, so the refusal is quick.
      const fork = [
        'import os, time',
        'kids = []',
        'try:',
        '    for i in range(60):',
        '        pid = os.fork()',
        '        if pid == 0:',
        '            time.sleep(5); os._exit(0)',
        '        kids.append(pid)',
        'except OSError:',
        '    pass',
        'for k in kids: os.kill(k, 9)',
        'print(len(kids))',
      ].join('\n');
      const result = collect(await runtime.exec(limited, { command: ['python3', '-c', fork] }));
      const forked = Number((await result).stdout.toString().trim());
      assert.ok(forked > 0 && forked < 20, `forked ${forked} processes under a limit of 20`);
      await runtime.destroy(limited);
    });
  });
}

/** Host uids of processes whose command line is exactly `args`. */
function findHostUidsOf(args: string): number[] {
  const uids: number[] = [];
  for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
      if (cmdline !== args) continue;
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      uids.push(Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]));
    } catch {
      // exited meanwhile
    }
  }
  return uids;
}
