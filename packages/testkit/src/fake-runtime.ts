// A Runtime for unit tests of core logic: each exec is a plain host process in a temp dir.
// It isolates nothing; the conformance suite runs it with isolation checks off. connect() and
// listen() use the host's network, as the daemon's own user whatever `user` says (like exec); a `tty` exec gets no real terminal (TERM, COLUMNS and LINES
// are set, stderr is merged into stdout, resize() is accepted and does nothing).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, type Duplex } from 'node:stream';
import type {
  ConnectOpts, EgressRules, ExecOpts, ExitStatus, ListenOpts, ProcessHandle, Runtime, RuntimeInfo, SandboxAddress, SandboxLimits, SandboxListener, SandboxSpec,
} from '@roost/core';

interface FakeSandbox {
  /** Its cwd and HOME: the workspace's upper dir when it mounts one (kept on destroy), else a temp dir. */
  dir: string;
  ownsDir: boolean;
  env: Record<string, string>;
  /** Process groups of its execs, kept after they exit: background children live on in them. */
  pids: Set<number>;
  listeners: Set<SandboxListener>;
}

export class FakeRuntime implements Runtime {
  readonly info: RuntimeInfo;

  constructor(info: Partial<RuntimeInfo> = {}) {
    this.info = { engine: 'fake', maxOpenFiles: 1_048_576, natAllowed: true, sftpServer: ['/usr/lib/openssh/sftp-server'], ...info };
  }
  private readonly sandboxes = new Map<string, FakeSandbox>();

  async create(spec: SandboxSpec): Promise<void> {
    // A workspace's files are what the sandbox writes: the fake's execs run in its upper dir.
    const dir = spec.workspace ? join(spec.workspace.dir, 'upper') : mkdtempSync(join(tmpdir(), `roost-fake-${spec.id}-`));
    this.mounted.set(spec.id, spec.workspace);
    this.sandboxes.set(spec.id, { dir, ownsDir: !spec.workspace, env: { ...spec.env, HOSTNAME: spec.hostname }, pids: new Set(), listeners: new Set() });
  }

  /** The workspace each sandbox was created with (undefined: none), so tests see what core mounted. */
  readonly mounted = new Map<string, SandboxSpec['workspace']>();

  async configure(spec: SandboxSpec): Promise<void> {
    const sandbox = this.sandboxes.get(spec.id);
    if (!sandbox) throw Object.assign(new Error(`sandbox ${spec.id} is not running`), { code: 'SANDBOX_NOT_RUNNING' });
    sandbox.env = { ...spec.env, HOSTNAME: spec.hostname };
  }

  /** The fake has no cgroups: it keeps what updateLimits got, so tests can see what core asked. */
  readonly limits = new Map<string, SandboxLimits>();

  async updateLimits(id: string, limits: SandboxLimits): Promise<void> {
    if (!this.sandboxes.has(id)) throw Object.assign(new Error(`sandbox ${id} is not running`), { code: 'SANDBOX_NOT_RUNNING' });
    this.limits.set(id, { ...limits });
  }

  /** Sandboxes frozen now (tests see what core asked); their process groups are SIGSTOPped, as a cgroup freezer would stop them. */
  readonly frozen = new Set<string>();

  async freeze(id: string): Promise<void> {
    const sandbox = this.sandboxes.get(id);
    if (!sandbox) throw Object.assign(new Error(`sandbox ${id} is not running`), { code: 'SANDBOX_NOT_RUNNING' });
    this.frozen.add(id);
    for (const pid of sandbox.pids) killGroup(pid, 'SIGSTOP');
  }

  async thaw(id: string): Promise<void> {
    const sandbox = this.sandboxes.get(id);
    if (!sandbox) throw Object.assign(new Error(`sandbox ${id} is not running`), { code: 'SANDBOX_NOT_RUNNING' });
    this.frozen.delete(id);
    for (const pid of sandbox.pids) killGroup(pid, 'SIGCONT');
  }

  /** The fake has no network to enforce them on: it keeps them, so tests can see what core asked. */
  readonly egressRules = new Map<string, EgressRules>();

  async setEgressRules(id: string, rules: EgressRules): Promise<void> {
    if (!this.sandboxes.has(id)) throw Object.assign(new Error(`sandbox ${id} is not running`), { code: 'SANDBOX_NOT_RUNNING' });
    this.egressRules.set(id, rules);
  }

  async exec(id: string, opts: ExecOpts): Promise<ProcessHandle> {
    const sandbox = this.sandboxes.get(id);
    if (!sandbox) throw Object.assign(new Error(`sandbox ${id} is not running`), { code: 'SANDBOX_NOT_RUNNING' });
    const [command, ...args] = opts.command;
    const tty = opts.tty;
    const ttyEnv = tty ? { TERM: tty.term, COLUMNS: String(tty.cols), LINES: String(tty.rows) } : {};
    // Its own process group, so kill() reaches the children a script started.
    const child = spawn(command, args, {
      cwd: sandbox.dir,
      env: { PATH: process.env.PATH, HOME: sandbox.dir, ...sandbox.env, ...opts.env, ...ttyEnv },
      stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      detached: true,
    });
    const pid = child.pid;
    // Relayed, so they can be ended cleanly while a background child still holds the pipes.
    const stdout = child.stdout!.pipe(new PassThrough(), { end: !tty });
    const stderr = new PassThrough();
    // A terminal has one output: stderr goes there too, and the stderr stream stays empty.
    child.stderr!.pipe(tty ? stdout : stderr, { end: !tty });
    if (tty) stderr.end();
    if (pid) sandbox.pids.add(pid);
    const exited = new Promise<ExitStatus>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code, signal) => {
        // Background children may hold the pipes open; the process's exit is the end.
        setTimeout(() => {
          for (const pipe of [child.stdout!, child.stderr!]) {
            pipe.unpipe();
            pipe.destroy();
          }
          stdout.end();
          stderr.end();
        }, 50);
        resolve(signal ? { exitCode: 128 + (constants.signals[signal] ?? 0), signal } : { exitCode: code ?? 255 });
      });
    });
    return {
      stdout,
      stderr,
      stdin: child.stdin ?? undefined,
      wait: () => exited,
      kill: (signal = 'SIGKILL') => killGroup(pid, signal),
      // No terminal to resize: accepted and ignored.
      ...(tty && { resize: () => {} }),
    };
  }

  async connect(id: string, address: SandboxAddress, _opts?: ConnectOpts): Promise<Duplex> {
    this.mustHave(id);
    return new Promise((resolve, reject) => {
      const target = 'path' in address ? { path: address.path } : { host: address.host, port: address.port };
      const socket = createConnection({ ...target, allowHalfOpen: true });
      socket.once('connect', () => {
        socket.removeAllListeners('error');
        resolve(socket);
      });
      socket.once('error', (error: NodeJS.ErrnoException) => {
        const where = 'path' in address ? address.path : `${address.host} port ${address.port}`;
        reject(Object.assign(new Error(`connect ${where}: ${error.code ?? error.message}`), { code: 'CONNECT_FAILED' }));
      });
    });
  }

  async listen(id: string, opts: ListenOpts): Promise<SandboxListener> {
    const sandbox = this.mustHave(id);
    const sockets = new Set<Socket>();
    const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
      opts.onConnection(socket, socket.remotePort ? { host: socket.remoteAddress ?? '', port: socket.remotePort } : undefined);
    });
    const { address } = opts;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error: NodeJS.ErrnoException) => {
        const where = 'path' in address ? address.path : `${address.host} port ${address.port}`;
        reject(Object.assign(new Error(`listen ${where}: ${error.code ?? error.message}`), { code: 'LISTEN_FAILED' }));
      });
      if ('path' in address) server.listen(address.path, resolve);
      else server.listen(address.port, address.host, resolve);
    });
    const bound = server.address();
    const closed = new Promise<void>((resolve) => server.once('close', () => resolve()));
    const listener: SandboxListener = {
      address: typeof bound === 'string' || !bound ? { path: 'path' in address ? address.path : String(bound) } : { host: bound.address, port: bound.port },
      closed,
      close: async () => {
        server.close();
        for (const socket of sockets) socket.destroy();
        sandbox.listeners.delete(listener);
        await closed;
      },
    };
    sandbox.listeners.add(listener);
    return listener;
  }

  private mustHave(id: string): FakeSandbox {
    const sandbox = this.sandboxes.get(id);
    if (!sandbox) throw Object.assign(new Error(`sandbox ${id} is not running`), { code: 'SANDBOX_NOT_RUNNING' });
    return sandbox;
  }

  async destroy(id: string): Promise<void> {
    const sandbox = this.sandboxes.get(id);
    if (!sandbox) return;
    this.sandboxes.delete(id);
    for (const listener of sandbox.listeners) await listener.close();
    for (const pid of sandbox.pids) killGroup(pid, 'SIGKILL');
    if (sandbox.ownsDir) rmSync(sandbox.dir, { recursive: true, force: true });
  }

  /** Needs nothing from the host, and leaves nothing it does not hold. */
  async diagnose() {
    return { problems: [], leftovers: [] };
  }

  /** Host processes have no memory limit here: never OOM-killed. */
  async oomKillCount(): Promise<number> {
    return 0;
  }

  async list(): Promise<string[]> {
    return [...this.sandboxes.keys()];
  }

  async close(): Promise<void> {
    for (const id of [...this.sandboxes.keys()]) await this.destroy(id);
  }
}

function killGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (!pid) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}
