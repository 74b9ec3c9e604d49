import { spawn } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import type { Duplex, Writable } from 'node:stream';
import { NO_EGRESS_RULES } from '@roost/core';
import type {
  SandboxLimits,
  AttachedSandbox, ConnectOpts, EgressRules, ExecOpts, ListenOpts, Logger, Network, NetworkAttachment, NetworkMode, ProcessHandle, Runtime, RuntimeDiagnosis,
  RuntimeInfo, SandboxAddress, SandboxListener, SandboxSpec,
} from '@roost/core';
import { checkHostPrerequisites, type HostProblem } from './prereqs.js';
import { findOrphans } from './residue.js';
import { oomKillCount, removeCgroups } from './cgroups.js';
import { SHIFT_BASE, SHIFT_SIZE } from './constants.js';
import { openInstance, removeIdleInstance, type Instance } from './instance.js';
import { probeEngine, type Engine, type EngineName } from './engine.js';
import type { ImageStore } from './images.js';
import { hostIdBaseIn, hostIdClaims, mountIdmappedOverlay, overlappingClaim, probeIdmappedOverlay, type HostIdClaim } from './id-ranges.js';
import { Lxcfs, type LxcfsOpts } from './lxcfs.js';
import { OciNetwork, readSavedAddress } from './network.js';
import { baseEnv, execProcess, ociConfig, ociResources } from './oci-config.js';
import { mustRun } from './proc.js';
import { mountOverlay, mountsUnder, unmountAll } from './overlay.js';
import { processHandle, terminalDimension } from './process-handle.js';
import { connectedStream, relayListener } from './relay-streams.js';
import { buildToolsCommand, DEFAULT_IDMAP_HELPER, DEFAULT_TOOLS_DIR, missingTools, SANDBOX_TOOLS } from './tools.js';

export interface OciRuntimeOpts {
  /** e.g. <dataDir>/runtime: bundles under sandboxes/, the engine's private state under oci-state/. */
  stateDir: string;
  images: ImageStore;
  logger: Logger;
  engine?: 'auto' | EngineName;
  /** Host dir mounted read-only at /.roost/tools in every sandbox (default: DEFAULT_TOOLS_DIR). */
  toolsDir?: string;
  /** Egress: whether sandboxes may ask for NAT, the resolvers their DNS goes to, and the non-public ranges they may reach anyway. */
  network?: { allowNat: boolean; dnsServers: string[]; egressAllowCidrs?: string[] };
  /**
   * Which roostd on this host (instance.ts): scopes the bridge, subnet, nft table, cgroup parent
   * and veth names. `name` undefined: what the state dir says, else derived from its path.
   */
  instance?: { name?: string; subnet?: string };
  /**
   * Tells whether idmapped image layers work (undefined) or why not. Default: the real probe,
   * run once at start. Tests inject a refusal to exercise the shared-range fallback.
   */
  probeIdmap?: () => Promise<string | undefined>;
  /**
   * The Network port the sandboxes are attached with. Default: an OciNetwork on the instance's
   * bridge with the `network` settings above.
   */
  makeNetwork?: (instance: Instance) => Network;
  /** Where sandboxes' /proc views come from (lxcfs.ts): the host's lxcfs, roostd's own, or none. */
  lxcfs?: LxcfsOpts;
  /** Problems of what sandboxes also depend on (the workspace pool), reported by diagnose() with the runtime's own. */
  extraProblems?: () => Promise<HostProblem[]>;
}

/** How sandboxes' host ids are laid out on this host, decided once at start. */
interface IdLayout {
  /** Why every sandbox shares SHIFT_BASE's range, when it must; undefined: a range each. */
  sharedBecause?: string;
  helper: string;
  /** Host accounts whose ids lie where sandboxes' ranges are. */
  claims: HostIdClaim[];
}

/** What every exec in a sandbox gets, kept in the bundle (exec.json) so a restart re-learns it. */
interface ExecProfile {
  /** crun exec --env replaces the init's env rather than extending it: this is all of it. */
  env: Record<string, string>;
  openFiles: number;
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
  // Before anything is made in the state dir: a sandboxes/ dir there means an older roostd used it.
  const instance = await openInstance(opts.stateDir, { ...opts.instance, logger: opts.logger });
  await fs.mkdir(path.join(opts.stateDir, 'sandboxes'), { recursive: true, mode: 0o711 });
  const engine = await probeEngine(opts.stateDir, opts.engine ?? 'auto', toolsDir, opts.logger, instance.cgroupParent);
  const ids: IdLayout = {
    helper: DEFAULT_IDMAP_HELPER,
    sharedBecause: await (opts.probeIdmap ?? (() => probeIdmappedOverlay(DEFAULT_IDMAP_HELPER, opts.stateDir, hostIdBaseIn(instance.idRegion, 0))))(),
    claims: await hostIdClaims(),
  };
  if (ids.sharedBecause) {
    opts.logger.warn(
      { reason: ids.sharedBecause, hostIds: `${SHIFT_BASE}..${SHIFT_BASE + SHIFT_SIZE - 1}` },
      'idmapped mounts unavailable: every sandbox shares one host uid range (roost doctor shows this)',
    );
  }
  const network = opts.makeNetwork?.(instance) ?? new OciNetwork({
    instance,
    allowNat: opts.network?.allowNat ?? false,
    dnsServers: opts.network?.dnsServers ?? [],
    allowCidrs: opts.network?.egressAllowCidrs ?? [],
    logger: opts.logger,
  });
  const info: RuntimeInfo = {
    engine: engine.version,
    maxOpenFiles: await maxOpenFiles(),
    natAllowed: network.natAllowed,
    sftpServer: [SANDBOX_TOOLS.sftpServer],
  };
  const lxcfs = await Lxcfs.open(opts.stateDir, opts.lxcfs ?? {}, opts.logger);
  const rt = new OciRuntime(info, engine, network, instance, opts, toolsDir, ids, lxcfs);
  try {
    await network.adopt(await rt.adopt());
  } catch (error) {
    // An lxcfs started just now must not outlive a runtime that never ran (sandboxes kept from
    // before keep theirs).
    await lxcfs.close((await rt.list()).length === 0).catch(() => {});
    throw error;
  }
  return rt;
}

class OciRuntime implements Runtime {
  private readonly log: Logger;
  private readonly sandboxesDir: string;
  /** Sandboxes that accept execs, with what their execs get. */
  private readonly running = new Map<string, ExecProfile>();
  /** One create/destroy at a time per id. */
  private readonly busy = new Map<string, Promise<unknown>>();
  /** Host uid/gid of each held sandbox's root: no two may share one (except the fallback's SHIFT_BASE). */
  private readonly hostIdBases = new Map<string, number>();
  private execSeq = 0;

  constructor(
    readonly info: RuntimeInfo,
    private readonly engine: Engine,
    private readonly network: Network,
    private readonly instance: Instance,
    private readonly opts: OciRuntimeOpts,
    private readonly toolsDir: string,
    private readonly ids: IdLayout,
    private readonly lxcfs: Lxcfs,
  ) {
    this.log = opts.logger;
    this.sandboxesDir = path.join(opts.stateDir, 'sandboxes');
  }

  private bundle(id: string): string {
    return path.join(this.sandboxesDir, id);
  }

  /**
   * Re-learns sandboxes left by a previous process, so they stay listable and reachable.
   * Returns their network attachments (address, mode, rules; netns only when running), for the Network.
   */
  async adopt(): Promise<AttachedSandbox[]> {
    const attached: AttachedSandbox[] = [];
    for (const id of await this.list()) {
      const dir = this.bundle(id);
      const address = await readSavedAddress(path.join(dir, 'address'));
      const base = await savedHostIdBase(dir);
      if (base !== undefined) this.hostIdBases.set(id, base);
      const profile = await this.savedExecProfile(dir);
      const running = profile !== undefined && existsSync(path.join(this.engine.root, id));
      if (running) this.running.set(id, profile);
      if (!address) continue;
      const pid = running ? (await fs.readFile(path.join(dir, 'init.pid'), 'utf8').catch(() => '')).trim() : '';
      attached.push({
        id, address, mode: await this.networkOf(id), egress: await this.savedRules(id),
        ...(pid ? { netnsPath: `/proc/${pid}/ns/net` } : {}),
      });
    }
    return attached;
  }

  /**
   * exec.json; for a sandbox made by a roostd from before it existed, the init's env from
   * config.json and the most open files this host gives (no limit was set then).
   */
  private async savedExecProfile(dir: string): Promise<ExecProfile | undefined> {
    const saved = await fs.readFile(path.join(dir, 'exec.json'), 'utf8').catch(() => undefined);
    if (saved) return JSON.parse(saved) as ExecProfile;
    const config = await fs.readFile(path.join(dir, 'config.json'), 'utf8').catch(() => undefined);
    if (!config) return undefined;
    const env = Object.fromEntries(
      ((JSON.parse(config) as { process: { env: string[] } }).process.env ?? []).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
    );
    return { env, openFiles: this.info.maxOpenFiles };
  }

  private async networkOf(id: string): Promise<NetworkMode> {
    return (await fs.readFile(path.join(this.bundle(id), 'network'), 'utf8').catch(() => 'none')).trim() as NetworkMode;
  }

  private async savedRules(id: string): Promise<EgressRules> {
    const saved = await fs.readFile(path.join(this.bundle(id), 'egress.json'), 'utf8').catch(() => undefined);
    return saved ? (JSON.parse(saved) as EgressRules) : NO_EGRESS_RULES;
  }

  /**
   * Keeps the mode and rules in the bundle (a restart hands them to the Network's adopt) and
   * gives them to the Network.
   */
  private async applyEgress(id: string, change: { mode?: NetworkMode; rules: EgressRules }): Promise<NetworkAttachment> {
    await fs.writeFile(path.join(this.bundle(id), 'egress.json'), JSON.stringify(change.rules));
    const attachment = await this.network.setEgress(id, change);
    if (change.mode === 'nat') await fs.writeFile(path.join(this.bundle(id), 'network'), change.mode);
    return attachment;
  }

  setEgressRules(id: string, rules: EgressRules): Promise<void> {
    return this.serial(id, async () => {
      if (!this.running.has(id)) throw notRunning(id);
      await this.applyEgress(id, { rules });
    });
  }

  private async saveExecProfile(id: string, spec: SandboxSpec): Promise<void> {
    const profile: ExecProfile = { env: baseEnv(spec), openFiles: spec.limits.openFiles };
    await fs.writeFile(path.join(this.bundle(id), 'exec.json'), JSON.stringify(profile), { mode: 0o600 });
    this.running.set(id, profile);
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
    const tooHigh = this.limitProblem(spec);
    if (tooHigh) return Promise.reject(tooHigh);
    return this.serial(spec.id, () => this.doCreate(spec));
  }

  /**
   * Host uid/gid of the new sandbox's root: its own range's (in the instance's region), or
   * SHIFT_BASE for all when the kernel gave no idmapped mounts. Refuses a range another held sandbox has (the store should
   * never hand out one twice) or one that would own a host account's ids.
   */
  private hostIdBaseFor(spec: SandboxSpec): number {
    if (this.ids.sharedBecause) return SHIFT_BASE;
    const base = hostIdBaseIn(this.instance.idRegion, spec.idRange);
    for (const [other, otherBase] of this.hostIdBases) {
      if (otherBase === base) throw new Error(`host id range ${spec.idRange} is in use by sandbox ${other}`);
    }
    const claim = overlappingClaim(base, this.ids.claims);
    if (claim) {
      throw new Error(`host id range ${spec.idRange} (${base}..${base + SHIFT_SIZE - 1}) overlaps ids of ${claim.what}; remove that grant or move it above ${base + SHIFT_SIZE - 1}`);
    }
    return base;
  }

  private limitProblem(spec: Pick<SandboxSpec, 'limits'>): Error | undefined {
    if (spec.limits.openFiles > this.info.maxOpenFiles) {
      return new Error(`open-files limit ${spec.limits.openFiles} is above this host's maximum of ${this.info.maxOpenFiles}`);
    }
    return undefined;
  }

  private async doCreate(spec: SandboxSpec): Promise<void> {
    const { id } = spec;
    const t0 = performance.now();
    const dir = this.bundle(id);
    if (existsSync(dir) || existsSync(path.join(this.engine.root, id))) throw new Error(`sandbox ${id} already exists`);
    if (spec.network === 'nat' && !this.network.natAllowed) {
      throw Object.assign(new Error('egress (--network nat) is turned off on this daemon'), { code: 'NETWORK_NOT_ALLOWED' });
    }
    const [lower, views] = await Promise.all([this.opts.images.resolve(spec.image), this.lxcfs.views()]);
    const base = this.hostIdBaseFor(spec);
    const undo: Array<() => Promise<unknown>> = [];
    try {
      this.hostIdBases.set(id, base);
      undo.push(async () => this.hostIdBases.delete(id));
      await fs.mkdir(dir, { mode: 0o711 });
      undo.push(() => fs.rm(dir, { recursive: true, force: true }));
      for (const d of ['rootfs', 'image']) await fs.mkdir(path.join(dir, d), { mode: 0o755 });
      if (spec.workspace) {
        // Where the workspace's idmapped view (and its lowers') are attached while mounting.
        await fs.mkdir(path.join(dir, 'ws'), { mode: 0o755 });
        for (let i = 0; i < spec.workspace.lowers.length; i++) await fs.mkdir(path.join(dir, `ws-lower-${i}`), { mode: 0o755 });
        // Which workspace it mounts: for people reading the bundle (roostd never deletes it).
        await fs.writeFile(path.join(dir, 'workspace.json'), JSON.stringify(spec.workspace));
      } else {
        for (const d of ['upper', 'work']) {
          await fs.mkdir(path.join(dir, d), { mode: 0o755 });
          // The overlay root takes the upper dir's owner: it must be root of the sandbox.
          await fs.chown(path.join(dir, d), base, base);
        }
      }

      const files = etcFiles(dir);
      // The files must exist for the engine's bind mounts; they get their content once the
      // Network has given the address, before the sandbox starts.
      await Promise.all([
        fs.writeFile(path.join(dir, 'network'), spec.network),
        fs.writeFile(path.join(dir, 'egress.json'), JSON.stringify(spec.egress ?? NO_EGRESS_RULES)),
        // Which lxcfs mount its /proc views are of: doctor and configure tell dead ones by it.
        fs.writeFile(path.join(dir, 'lxcfs'), views ? `${views.device}\n` : ''),
        ...Object.values(files).map((file) => fs.writeFile(file, '')),
        fs.writeFile(
          path.join(dir, 'config.json'),
          JSON.stringify(ociConfig(spec, {
            ...files, mountCgroup: this.engine.mountCgroup, toolsDir: this.toolsDir, hostIdBase: base, cgroupParent: this.instance.cgroupParent, lxcfs: views,
          })),
          // It holds the sandbox's env, which may hold secrets.
          { mode: 0o600 },
        ),
      ]);
      for (const file of Object.values(files)) await fs.chown(file, base, base);

      undo.push(() => unmountAll(dir));
      const rootfs = path.join(dir, 'rootfs');
      const ws = spec.workspace;
      if (ws && base === SHIFT_BASE) {
        // The fallback's sandboxes run as the canonical ids themselves: no mapping to do.
        await mountOverlay([...ws.lowers, lower].join(':'), path.join(ws.dir, 'upper'), path.join(ws.dir, 'work'), rootfs);
      } else if (ws) {
        await mountIdmappedOverlay(this.ids.helper, {
          lower, staging: path.join(dir, 'image'), target: rootfs, hostBase: base,
          workspace: { dir: ws.dir, staging: path.join(dir, 'ws'), lowers: ws.lowers.map((l, i) => ({ dir: l, staging: path.join(dir, `ws-lower-${i}`) })) },
        });
      } else {
        const [upper, work] = [path.join(dir, 'upper'), path.join(dir, 'work')];
        if (base === SHIFT_BASE) await mountOverlay(lower, upper, work, rootfs);
        else await mountIdmappedOverlay(this.ids.helper, { lower, staging: path.join(dir, 'image'), upper, work, target: rootfs, hostBase: base });
      }
      const tMount = performance.now();

      const pidFile = path.join(dir, 'init.pid');
      undo.push(() => removeCgroups(this.instance.cgroupParent, id));
      undo.push(() => this.engine.run(['delete', '-f', id]));
      const created = await this.engine.runToFile(['create', '--bundle', dir, '--pid-file', pidFile, id], path.join(dir, 'create.log'));
      if (created.code !== 0) throw new Error(`${this.engine.name} create failed: ${created.stderr.trim() || `exit ${created.code}`}`);
      const tCreate = performance.now();
      const pid = Number((await fs.readFile(pidFile, 'utf8')).trim());

      undo.push(() => this.network.detach(id));
      const attachment = await this.network.attach({ id, netnsPath: `/proc/${pid}/ns/net`, mode: spec.network, egress: spec.egress });
      await Promise.all([fs.writeFile(path.join(dir, 'address'), attachment.address), writeEtcFiles(files, spec, attachment)]);
      const tNet = performance.now();

      await this.mustEngine(['start', id]);
      await this.saveExecProfile(id, spec);
      const t1 = performance.now();
      this.log.debug(
        {
          id, addr: attachment.address, ms: +(t1 - t0).toFixed(1), mountMs: +(tMount - t0).toFixed(1),
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

  configure(spec: SandboxSpec): Promise<void> {
    const tooHigh = this.limitProblem(spec);
    if (tooHigh) return Promise.reject(tooHigh);
    return this.serial(spec.id, () => this.doConfigure(spec));
  }

  private async doConfigure(spec: SandboxSpec): Promise<void> {
    const { id } = spec;
    const dir = this.bundle(id);
    if (!this.running.has(id)) throw notRunning(id);
    const t0 = performance.now();
    const [pidText, config, madeWith, views] = await Promise.all([
      fs.readFile(path.join(dir, 'init.pid'), 'utf8'),
      fs.readFile(path.join(dir, 'config.json'), 'utf8'),
      savedLxcfsDevice(dir),
      this.lxcfs.views(),
    ]);
    // A pool member made while lxcfs was down, or with views of an lxcfs that has died since
    // (ENOTCONN): views cannot be added to a running sandbox, so the pool makes a fresh one.
    if (madeWith !== views?.device) {
      throw new Error(`sandbox ${id} has /proc views ${madeWith ? `of a gone lxcfs mount (${madeWith})` : 'of the host'} while lxcfs ${views ? 'answers' : 'does not'}: make a fresh one`);
    }
    const pid = Number(pidText.trim());
    const steps: Promise<unknown>[] = [
      this.applyEgress(id, { ...(spec.network === 'nat' ? { mode: 'nat' as const } : {}), rules: spec.egress ?? NO_EGRESS_RULES })
        // In place: the files are bind-mounted, a new inode would not show inside.
        .then((attachment) => writeEtcFiles(etcFiles(dir), spec, attachment)),
      mustRun('nsenter', [`--uts=/proc/${pid}/ns/uts`, 'hostname', spec.hostname]),
    ];
    const made = (JSON.parse(config) as { linux: { resources: object } }).linux.resources;
    const wanted = ociResources(spec.limits);
    if (JSON.stringify(made) !== JSON.stringify(wanted)) {
      const file = path.join(dir, 'resources.json');
      steps.push(fs.writeFile(file, JSON.stringify(wanted)).then(() => this.mustEngine(['update', '--resources', file, id])));
    }
    await Promise.all(steps);
    await this.saveExecProfile(id, spec);
    this.log.debug({ id, ms: +(performance.now() - t0).toFixed(1) }, 'sandbox configured');
  }

  updateLimits(id: string, limits: SandboxLimits): Promise<void> {
    const tooHigh = this.limitProblem({ limits });
    if (tooHigh) return Promise.reject(tooHigh);
    return this.serial(id, async () => {
      const profile = this.running.get(id);
      if (!profile) throw notRunning(id);
      // `crun update` (runc's too) writes the sandbox's cgroup: processes feel it at once.
      const file = path.join(this.bundle(id), 'resources.json');
      await fs.writeFile(file, JSON.stringify(ociResources(limits)));
      await this.mustEngine(['update', '--resources', file, id]);
      // RLIMIT_NOFILE is per process: new execs get it from the profile, running ones keep theirs.
      const updated: ExecProfile = { ...profile, openFiles: limits.openFiles };
      await fs.writeFile(path.join(this.bundle(id), 'exec.json'), JSON.stringify(updated), { mode: 0o600 });
      this.running.set(id, updated);
      this.log.info({ id, limits }, 'sandbox limits changed');
    });
  }

  /** `crun pause` / `runc pause`: the cgroup freezer stops every process of the sandbox. */
  freeze(id: string): Promise<void> {
    return this.serial(id, async () => {
      if (!this.running.has(id)) throw notRunning(id);
      await this.mustEngine(['pause', id]);
    });
  }

  thaw(id: string): Promise<void> {
    return this.serial(id, async () => {
      if (!this.running.has(id)) throw notRunning(id);
      const state = await this.engine.run(['state', id]);
      if (state.code === 0 && (JSON.parse(state.stdout) as { status?: string }).status !== 'paused') return;
      await this.mustEngine(['resume', id]);
    });
  }

  private async mustEngine(args: string[]): Promise<void> {
    const r = await this.engine.run(args);
    if (r.code !== 0) throw new Error(`${this.engine.name} ${args[0]} failed: ${r.stderr.trim() || `exit ${r.code}`}`);
  }

  async exec(id: string, opts: ExecOpts): Promise<ProcessHandle> {
    const profile = this.running.get(id);
    if (!profile || !existsSync(path.join(this.engine.root, id))) throw notRunning(id);
    if (!opts.command.length) throw new Error('exec needs a command');
    const tty = opts.tty && { ...opts.tty, cols: terminalDimension(opts.tty.cols), rows: terminalDimension(opts.tty.rows) };
    const account = opts.user === undefined || opts.user === 'root' || opts.user === '0' ? undefined : await this.account(id, opts.user);
    const name = `exec-${process.pid}-${++this.execSeq}`;
    const pidFile = path.join(this.bundle(id), `${name}.pid`);
    // The process (command, env, user, cwd) goes to the engine in a file, not as arguments: any
    // host user can read every process's arguments (`ps -eo args`), and `-e` values are often
    // secrets. The file is 0600, like every bundle file that holds env, and removed once the engine
    // has read it.
    const processFile = path.join(this.bundle(id), `${name}.process.json`);
    const userEnv = account && { HOME: account.home, USER: account.name, LOGNAME: account.name };
    const env = { ...profile.env, ...userEnv, ...opts.env, ...(tty ? { TERM: tty.term } : {}) };
    const command = tty ? [SANDBOX_TOOLS.pty, '--size', `${tty.cols}x${tty.rows}`, '--resize-fd', '3', '--', ...opts.command] : opts.command;
    await fs.writeFile(
      processFile,
      JSON.stringify(execProcess({ args: command, env, cwd: opts.cwd ?? account?.cwd ?? '/root', uid: account?.uid ?? 0, gid: account?.gid ?? 0 })),
      { mode: 0o600, flag: 'wx' },
    );
    // The open-files limit comes from prlimit, which runs as root outside the user namespace:
    // inside it the engine could only lower the daemon's own limit, never raise it.
    const nofile = `--nofile=${profile.openFiles}:${profile.openFiles}`;
    // The engine's own errors also go to a log of their own, so that a failure to start the
    // process (exit 255) is told from the process's own 255 (engine-failure.ts).
    const engineLog = path.join(this.bundle(id), `${name}.engine.log`);
    const args = [nofile, '--', this.engine.bin, '--root', this.engine.root, `--log=${engineLog}`, '--log-format=json', 'exec', '--process', processFile, '--pid-file', pidFile];
    // With a terminal, fd 3 carries resize requests to roost-pty (the engine passes fds 3..3+N-1;
    // prlimit execs the engine and keeps them).
    if (tty) args.push('--preserve-fds', '1');
    args.push(id);
    const child = spawn(PRLIMIT, args, {
      stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe', ...(tty ? (['pipe'] as const) : [])],
      env: engineEnv(),
    });
    return processHandle(child, pidFile, tty ? (child.stdio[3] as Writable) : undefined, processFile, engineLog);
  }

  /**
   * A user of the sandbox's /etc/passwd, read from the host through its root. The path must
   * resolve inside that root: a sandbox could make /etc/passwd a symlink to a host file.
   */
  private async account(id: string, user: string): Promise<{ name: string; uid: number; gid: number; home: string; cwd: string }> {
    const root = path.join(this.bundle(id), 'rootfs');
    const notFound = () => Object.assign(new Error(`no user "${user}" in the sandbox's /etc/passwd`), { code: 'USER_NOT_FOUND' });
    const file = await fs.realpath(path.join(root, 'etc', 'passwd')).catch(() => undefined);
    const text = file?.startsWith(`${root}/`) ? await fs.readFile(file, 'utf8').catch(() => '') : '';
    for (const line of text.split('\n')) {
      const [name, , uid, gid, , home] = line.split(':');
      if (name === undefined || uid === undefined || gid === undefined) continue;
      if (name === user || uid === user) {
        if (!/^\d+$/.test(uid) || !/^\d+$/.test(gid)) break;
        // Like sshd: a home that is not there (nobody's /nonexistent) means starting in /.
        const homeDir = home && (await fs.realpath(path.join(root, home)).catch(() => undefined));
        const usable = homeDir !== undefined && (homeDir === root || homeDir.startsWith(`${root}/`));
        return { name, uid: Number(uid), gid: Number(gid), home: home || '/', cwd: usable ? home! : '/' };
      }
    }
    if (/^\d+$/.test(user)) return { name: user, uid: Number(user), gid: Number(user), home: '/', cwd: '/' };
    throw notFound();
  }

  // The relay runs as the asking user, so the kernel decides what it may open or bind (root's
  // sockets, ports below 1024) exactly as for that user's own processes.
  async connect(id: string, address: SandboxAddress, opts: ConnectOpts = {}): Promise<Duplex> {
    const target = 'path' in address ? ['--unix', address.path] : [address.host, String(address.port)];
    const proc = await this.exec(id, { command: [SANDBOX_TOOLS.relay, 'connect', '--ready', ...target], stdin: true, user: opts.user });
    return connectedStream(proc, describeAddress(address));
  }

  async listen(id: string, opts: ListenOpts): Promise<SandboxListener> {
    const { address } = opts;
    const target = 'path' in address ? ['unix', address.path] : ['tcp', address.host, String(address.port)];
    const proc = await this.exec(id, { command: [SANDBOX_TOOLS.relay, 'listen', ...target], stdin: true, user: opts.user });
    return relayListener(proc, opts.onConnection, describeAddress(address), this.log);
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
    await step('network', () => this.network.detach(id));
    if (existsSync(path.join(this.engine.root, id))) {
      await step('engine delete', async () => {
        const r = await this.engine.run(['delete', '-f', id]);
        if (r.code !== 0 && existsSync(path.join(this.engine.root, id))) throw new Error(r.stderr.trim());
      });
    }
    await step('unmount', () => unmountAll(dir));
    await step('cgroups', () => removeCgroups(this.instance.cgroupParent, id));
    if (!problems.length) {
      await step('bundle', async () => {
        // rm must never reach through a mount: with a workspace that would delete its files.
        const left = await mountsUnder(dir);
        if (left.length) throw new Error(`still mounted: ${left.join(', ')}`);
        await fs.rm(dir, { recursive: true, force: true });
      });
      this.hostIdBases.delete(id);
    }
    if (problems.length) {
      this.log.error({ id, problems }, 'sandbox teardown incomplete');
      throw new Error(`cannot fully destroy sandbox ${id}: ${problems.join('; ')}`);
    }
  }

  async diagnose(): Promise<RuntimeDiagnosis> {
    const held = new Set(await this.list());
    const [problems, leftovers, netLeftovers, extra] = await Promise.all([
      checkHostPrerequisites(), findOrphans(this.instance, held), this.network.diagnose(held),
      this.opts.extraProblems?.().catch((error: Error) => [{ problem: `cannot check the workspace pool: ${error.message}`, fix: 'see the daemon log' }]) ?? [],
    ]);
    problems.push(...extra);
    leftovers.push(...netLeftovers);
    const lxcfsProblem = await this.lxcfs.problem();
    if (lxcfsProblem) problems.push(lxcfsProblem);
    const stale = await this.staleViews(held);
    if (stale.length) {
      problems.push({
        problem: `sandboxes ${stale.join(', ')} have /proc views of an lxcfs that is gone: reading /proc/meminfo, cpuinfo, uptime there fails (ENOTCONN)`,
        fix: 'remove and make them again (roost rm, roost new): a running sandbox cannot get new views',
      });
    }
    if (this.ids.sharedBecause) {
      problems.push({
        problem: `every sandbox runs in the same host uid range (${SHIFT_BASE}..${SHIFT_BASE + SHIFT_SIZE - 1}): idmapped mounts do not work here (${this.ids.sharedBecause}), so a process escaping one sandbox would own the others' files and processes`,
        fix: `use a kernel with idmapped mounts under overlayfs (Linux 5.19 or later) and a filesystem that supports them for ${this.opts.images.cacheDir}, build the helper (make -C adapters/runtime-oci/native), then restart roostd`,
      });
    }
    return { problems, leftovers };
  }

  /** Held sandboxes whose views are of an lxcfs mount that is no longer the live one. */
  private async staleViews(held: Set<string>): Promise<string[]> {
    const current = (await this.lxcfs.views())?.device;
    const stale: string[] = [];
    for (const id of held) {
      const device = await savedLxcfsDevice(this.bundle(id));
      if (device && device !== current) stale.push(id);
    }
    return stale;
  }

  oomKillCount(id: string): Promise<number> {
    return oomKillCount(this.instance.cgroupParent, id);
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
    await this.network.close();
    const idle = (await this.list()).length === 0;
    await this.lxcfs.close(idle);
    if (idle) await removeIdleInstance(this.instance, this.log);
  }
}

const PRLIMIT = '/usr/bin/prlimit';
const CAP_SYS_RESOURCE = 24;

/**
 * With CAP_SYS_RESOURCE prlimit can raise a limit up to fs.nr_open; without it (some hosts
 * withhold it even from root) no higher than the daemon's own hard limit.
 */
async function maxOpenFiles(): Promise<number> {
  const [status, limits, nrOpen] = await Promise.all([
    fs.readFile('/proc/self/status', 'utf8'),
    fs.readFile('/proc/self/limits', 'utf8'),
    fs.readFile('/proc/sys/fs/nr_open', 'utf8').catch(() => '1048576'),
  ]);
  const effective = BigInt(`0x${/^CapEff:\s+([0-9a-f]+)/m.exec(status)?.[1] ?? '0'}`);
  if ((effective >> BigInt(CAP_SYS_RESOURCE)) & 1n) return Number(nrOpen.trim());
  const hard = /^Max open files\s+\S+\s+(\S+)/m.exec(limits)?.[1];
  return hard === undefined || hard === 'unlimited' ? Number(nrOpen.trim()) : Number(hard);
}

/** Host uid of the root of a sandbox made earlier, from its config.json's uid mapping. */
async function savedHostIdBase(dir: string): Promise<number | undefined> {
  const config = await fs.readFile(path.join(dir, 'config.json'), 'utf8').catch(() => undefined);
  if (!config) return undefined;
  const mappings = (JSON.parse(config) as { linux?: { uidMappings?: { containerID: number; hostID: number }[] } }).linux?.uidMappings;
  return mappings?.find((m) => m.containerID === 0)?.hostID;
}

/** The lxcfs mount (device) a sandbox's views are of; undefined: it has none. */
async function savedLxcfsDevice(dir: string): Promise<string | undefined> {
  return (await fs.readFile(path.join(dir, 'lxcfs'), 'utf8').catch(() => '')).trim() || undefined;
}

/** The files bind-mounted over the image's /etc ones, so each sandbox has its own. */
function etcFiles(dir: string) {
  return {
    hostsFile: path.join(dir, 'hosts'),
    hostnameFile: path.join(dir, 'hostname'),
    resolvConfFile: path.join(dir, 'resolv.conf'),
  };
}

async function writeEtcFiles(files: ReturnType<typeof etcFiles>, spec: SandboxSpec, attachment: NetworkAttachment): Promise<void> {
  await Promise.all([
    fs.writeFile(files.hostsFile, `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n${attachment.address}\t${spec.hostname}\n`),
    fs.writeFile(files.hostnameFile, `${spec.hostname}\n`),
    fs.writeFile(files.resolvConfFile, attachment.resolvConf),
  ]);
}
