import { spawn } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import type { Duplex, Writable } from 'node:stream';
import type {
  ExecOpts, ListenOpts, Logger, ProcessHandle, Runtime, RuntimeDiagnosis, RuntimeInfo, SandboxAddress, SandboxListener, SandboxSpec,
} from '@roost/core';
import { checkHostPrerequisites } from './prereqs.js';
import { findOrphans } from './residue.js';
import { oomKillCount, removeCgroups } from './cgroups.js';
import { SHIFT_BASE } from './constants.js';
import { probeEngine, type Engine, type EngineName } from './engine.js';
import type { ImageStore } from './images.js';
import { AddressPool, attachSandbox, detachSandbox, ensureBridge, readSavedAddress } from './network.js';
import { baseEnv, envList, ociConfig } from './oci-config.js';
import { mountOverlay, unmountAll } from './overlay.js';
import { processHandle, terminalDimension } from './process-handle.js';
import { connectedStream, relayListener } from './relay-streams.js';
import { buildToolsCommand, DEFAULT_TOOLS_DIR, missingTools, SANDBOX_TOOLS } from './tools.js';

export interface OciRuntimeOpts {
  /** e.g. <dataDir>/runtime: bundles under sandboxes/, the engine's private state under oci-state/. */
  stateDir: string;
  images: ImageStore;
  logger: Logger;
  engine?: 'auto' | EngineName;
  /** Host dir mounted read-only at /.roost/tools in every sandbox (default: DEFAULT_TOOLS_DIR). */
  toolsDir?: string;
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const PROBE_PREFIX = 'roost-probe-';

function notRunning(id: string): Error {
  return Object.assign(new Error(`sandbox ${id} is not running`), { code: 'SANDBOX_NOT_RUNNING' });
}

function describeAddress(address: SandboxAddress): string {
  return 'path' in address ? address.path : `${address.host} port ${address.port}`;
}

/**
 * The engine's environment: ours without systemd's socket-activation variables. runc (and
 * crun) pass $LISTEN_FDS descriptors on to the process ahead of --preserve-fds ones, which
 * would move the resize pipe off fd 3.
 */
function engineEnv(): NodeJS.ProcessEnv {
  const { LISTEN_FDS: _fds, LISTEN_PID: _pid, LISTEN_FDNAMES: _names, ...rest } = process.env;
  return rest;
}

export async function createOciRuntime(opts: OciRuntimeOpts): Promise<Runtime> {
  const toolsDir = path.resolve(opts.toolsDir ?? DEFAULT_TOOLS_DIR);
  const missing = missingTools(toolsDir);
  if (missing.length) {
    throw new Error(`the in-sandbox tools are not built (${missing.join(', ')} missing in ${toolsDir}); fix: ${buildToolsCommand(toolsDir)}`);
  }
  await fs.mkdir(path.join(opts.stateDir, 'sandboxes'), { recursive: true, mode: 0o711 });
  const engine = await probeEngine(opts.stateDir, opts.engine ?? 'auto', toolsDir, opts.logger);
  await ensureBridge(opts.logger);
  const rt = new OciRuntime(engine, opts, toolsDir);
  await rt.adopt();
  return rt;
}

class OciRuntime implements Runtime {
  readonly info: RuntimeInfo;
  private readonly log: Logger;
  private readonly sandboxesDir: string;
  private readonly pool = new AddressPool();
  /** Sandboxes that accept execs; the env of their processes (exec --env replaces, not extends). */
  private readonly running = new Map<string, Record<string, string>>();
  /** One create/destroy at a time per id. */
  private readonly busy = new Map<string, Promise<unknown>>();
  private execSeq = 0;

  constructor(private readonly engine: Engine, private readonly opts: OciRuntimeOpts, private readonly toolsDir: string) {
    this.info = { engine: engine.version, sftpServer: [SANDBOX_TOOLS.sftpServer] };
    this.log = opts.logger;
    this.sandboxesDir = path.join(opts.stateDir, 'sandboxes');
  }

  private bundle(id: string): string {
    return path.join(this.sandboxesDir, id);
  }

  /** Re-learns sandboxes left by a previous process, so they stay listable and reachable. */
  async adopt(): Promise<void> {
    for (const id of await this.list()) {
      const addr = await readSavedAddress(path.join(this.bundle(id), 'address'));
      if (addr) this.pool.reserve(addr);
      const cfg = await fs.readFile(path.join(this.bundle(id), 'config.json'), 'utf8').catch(() => undefined);
      if (cfg && existsSync(path.join(this.engine.root, id))) {
        const env = Object.fromEntries(
          (JSON.parse(cfg).process.env as string[]).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
        );
        this.running.set(id, env);
      }
    }
  }

  private serial<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.busy.get(id) ?? Promise.resolve();
    const next = prev.catch(() => {}).then(fn);
    this.busy.set(id, next);
    next.finally(() => this.busy.get(id) === next && this.busy.delete(id)).catch(() => {});
    return next;
  }

  create(spec: SandboxSpec): Promise<void> {
    if (!ID_RE.test(spec.id) || spec.id.startsWith(PROBE_PREFIX)) {
      return Promise.reject(new Error(`invalid sandbox id "${spec.id}"`));
    }
    return this.serial(spec.id, () => this.doCreate(spec));
  }

  private async doCreate(spec: SandboxSpec): Promise<void> {
    const { id } = spec;
    const t0 = performance.now();
    const dir = this.bundle(id);
    if (existsSync(dir) || existsSync(path.join(this.engine.root, id))) throw new Error(`sandbox ${id} already exists`);
    const lower = await this.opts.images.resolve(spec.image);
    const undo: Array<() => Promise<unknown>> = [];
    try {
      await fs.mkdir(dir, { mode: 0o711 });
      undo.push(() => fs.rm(dir, { recursive: true, force: true }));
      for (const d of ['upper', 'work', 'rootfs']) await fs.mkdir(path.join(dir, d), { mode: 0o755 });
      // The overlay root takes the upper dir's owner: it must be root of the sandbox.
      await fs.chown(path.join(dir, 'upper'), SHIFT_BASE, SHIFT_BASE);
      await fs.chown(path.join(dir, 'work'), SHIFT_BASE, SHIFT_BASE);

      const addr = this.pool.take(id);
      undo.push(async () => this.pool.release(addr));
      const hostsFile = path.join(dir, 'hosts');
      const hostnameFile = path.join(dir, 'hostname');
      await Promise.all([
        fs.writeFile(path.join(dir, 'address'), addr),
        fs.writeFile(hostsFile, `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n${addr}\t${spec.hostname}\n`),
        fs.writeFile(hostnameFile, `${spec.hostname}\n`),
        fs.writeFile(
          path.join(dir, 'config.json'),
          JSON.stringify(ociConfig(spec, { hostsFile, hostnameFile, mountCgroup: this.engine.mountCgroup, toolsDir: this.toolsDir })),
        ),
      ]);
      await fs.chown(hostsFile, SHIFT_BASE, SHIFT_BASE);
      await fs.chown(hostnameFile, SHIFT_BASE, SHIFT_BASE);

      await mountOverlay(lower, path.join(dir, 'upper'), path.join(dir, 'work'), path.join(dir, 'rootfs'));
      undo.push(() => unmountAll(dir));
      const tMount = performance.now();

      const pidFile = path.join(dir, 'init.pid');
      undo.push(() => removeCgroups(id));
      undo.push(() => this.engine.run(['delete', '-f', id]));
      const created = await this.engine.runToFile(['create', '--bundle', dir, '--pid-file', pidFile, id], path.join(dir, 'create.log'));
      if (created.code !== 0) throw new Error(`${this.engine.name} create failed: ${created.stderr.trim() || `exit ${created.code}`}`);
      const tCreate = performance.now();
      const pid = Number((await fs.readFile(pidFile, 'utf8')).trim());

      undo.push(() => detachSandbox(id));
      await attachSandbox(id, pid, addr);
      const tNet = performance.now();

      await this.mustEngine(['start', id]);
      this.running.set(id, baseEnv(spec));
      const t1 = performance.now();
      this.log.debug(
        {
          id, addr, ms: +(t1 - t0).toFixed(1), mountMs: +(tMount - t0).toFixed(1),
          createMs: +(tCreate - tMount).toFixed(1), netMs: +(tNet - tCreate).toFixed(1), startMs: +(t1 - tNet).toFixed(1),
        },
        'sandbox created',
      );
    } catch (e) {
      for (const step of undo.reverse()) {
        await step().catch((err: Error) => this.log.error({ id, error: err.message }, 'rollback step failed'));
      }
      throw new Error(`cannot create sandbox ${id}: ${(e as Error).message}`, { cause: e });
    }
  }

  private async mustEngine(args: string[]): Promise<void> {
    const r = await this.engine.run(args);
    if (r.code !== 0) throw new Error(`${this.engine.name} ${args[0]} failed: ${r.stderr.trim() || `exit ${r.code}`}`);
  }

  async exec(id: string, opts: ExecOpts): Promise<ProcessHandle> {
    const env = this.running.get(id);
    if (!env || !existsSync(path.join(this.engine.root, id))) throw notRunning(id);
    if (!opts.command.length) throw new Error('exec needs a command');
    const tty = opts.tty && { ...opts.tty, cols: terminalDimension(opts.tty.cols), rows: terminalDimension(opts.tty.rows) };
    const pidFile = path.join(this.bundle(id), `exec-${process.pid}-${++this.execSeq}.pid`);
    // exec does not take noNewPrivileges from config.json: without the flag an exec'd setuid
    // binary could gain privileges the sandbox's init never had.
    const args = ['--root', this.engine.root, 'exec', '--no-new-privs', '--cwd', opts.cwd ?? '/root', '--pid-file', pidFile];
    // With a terminal, fd 3 carries resize requests to roost-pty (the engine passes fds 3..3+N-1).
    if (tty) args.push('--preserve-fds', '1');
    for (const kv of envList({ ...env, ...opts.env, ...(tty ? { TERM: tty.term } : {}) })) args.push('--env', kv);
    args.push(id);
    if (tty) args.push(SANDBOX_TOOLS.pty, '--size', `${tty.cols}x${tty.rows}`, '--resize-fd', '3', '--');
    args.push(...opts.command);
    const child = spawn(this.engine.bin, args, {
      stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe', ...(tty ? (['pipe'] as const) : [])],
      env: engineEnv(),
    });
    return processHandle(child, pidFile, tty ? (child.stdio[3] as Writable) : undefined);
  }

  async connect(id: string, address: SandboxAddress): Promise<Duplex> {
    const target = 'path' in address ? ['--unix', address.path] : [address.host, String(address.port)];
    const proc = await this.exec(id, { command: [SANDBOX_TOOLS.relay, 'connect', '--ready', ...target], stdin: true });
    return connectedStream(proc, describeAddress(address));
  }

  async listen(id: string, opts: ListenOpts): Promise<SandboxListener> {
    const { address } = opts;
    const target = 'path' in address ? ['unix', address.path] : ['tcp', address.host, String(address.port)];
    const proc = await this.exec(id, { command: [SANDBOX_TOOLS.relay, 'listen', ...target], stdin: true });
    return relayListener(proc, opts.onConnection, describeAddress(address));
  }

  destroy(id: string): Promise<void> {
    if (!ID_RE.test(id)) return Promise.resolve();
    return this.serial(id, () => this.doDestroy(id));
  }

  private async doDestroy(id: string): Promise<void> {
    this.running.delete(id);
    const dir = this.bundle(id);
    const problems: string[] = [];
    const step = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (e) {
        problems.push(`${what}: ${(e as Error).message}`);
      }
    };
    await step('veth', () => detachSandbox(id));
    if (existsSync(path.join(this.engine.root, id))) {
      await step('engine delete', async () => {
        const r = await this.engine.run(['delete', '-f', id]);
        if (r.code !== 0 && existsSync(path.join(this.engine.root, id))) throw new Error(r.stderr.trim());
      });
    }
    await step('unmount', () => unmountAll(dir));
    await step('cgroups', () => removeCgroups(id));
    const addr = await readSavedAddress(path.join(dir, 'address'));
    if (!problems.length) {
      await step('bundle', () => fs.rm(dir, { recursive: true, force: true }));
      if (addr) this.pool.release(addr);
    }
    if (problems.length) {
      this.log.error({ id, problems }, 'sandbox teardown incomplete');
      throw new Error(`cannot fully destroy sandbox ${id}: ${problems.join('; ')}`);
    }
  }

  async diagnose(): Promise<RuntimeDiagnosis> {
    const held = new Set(await this.list());
    const [problems, leftovers] = await Promise.all([checkHostPrerequisites(), findOrphans(this.opts.stateDir, held)]);
    return { problems, leftovers };
  }

  oomKillCount(id: string): Promise<number> {
    return oomKillCount(id);
  }

  async list(): Promise<string[]> {
    const ids = new Set<string>();
    for (const d of [this.engine.root, this.sandboxesDir]) {
      for (const e of await fs.readdir(d, { withFileTypes: true }).catch(() => [])) {
        if (e.isDirectory() && !e.name.startsWith(PROBE_PREFIX)) ids.add(e.name);
      }
    }
    return [...ids].sort();
  }

  async close(): Promise<void> {
    // Sandboxes outlive the daemon on purpose: the next start adopts them.
    await Promise.allSettled([...this.busy.values()]);
  }
}
