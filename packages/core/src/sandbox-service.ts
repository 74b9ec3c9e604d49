// The sandbox life cycle: create, exec, run a one-shot script, look, stop, remove. Pure logic
// over the ports; every I/O goes through the runtime, the store or the clock.
import type { Duplex, Writable } from 'node:stream';
import { normaliseEgressRules, NO_EGRESS_RULES } from './egress-rules.js';
import { RoostError } from './errors.js';
import { assertValidSandboxName, isSandboxId } from './names.js';
import { mergeOutput, type OutputChunk } from './output.js';
import { admitSandbox, admitTimeout, type Quotas } from './quotas.js';
import { RunLogs } from './run-logs.js';
import type { WarmPool } from './warm-pool.js';
import type { WorkspaceService, WorkspaceView } from './workspace-service.js';
import type {
  Clock,
  ExecOpts,
  ExitStatus,
  ListenOpts,
  Logger,
  NetworkMode,
  ProcessHandle,
  QuotaLimits,
  Runtime,
  RuntimeDiagnosis,
  SandboxAddress,
  ConnectOpts,
  SandboxLimits,
  SandboxListener,
  SandboxPatch,
  SandboxRecord,
  SandboxSpec,
  SandboxStatus,
  WorkspaceMount,
  WorkspaceRecord,
  WorkspaceSnapshot,
  Store,
  TerminalOpts,
  UserRecord,
  UserUsage,
} from './ports.js';
import { nameHoldingStatuses } from './ports.js';

export interface SandboxDefaults {
  image: string;
  limits: SandboxLimits;
  network: NetworkMode;
}

export interface SandboxServiceDeps {
  store: Store;
  runtime: Runtime;
  clock: Clock;
  logger: Logger;
  /** Random id of the given prefix, e.g. newId('sb') → "sb_k3…". */
  newId(prefix: string): string;
  defaults: SandboxDefaults;
  /** Ready sandboxes that create() claims before making one. */
  pool?: WarmPool;
  /** Each owner's limits: create, run and exec are checked against them. */
  quotas: Quotas;
  /** How many ended runs each owner keeps, and how many bytes of their logs; absent: no limit. */
  runRetention?: RunRetention;
  /** Workspaces; absent: sandboxes have a writable layer of their own only, and -w is refused. */
  workspaces?: WorkspaceService;
}

/**
 * Ended runs (one-shot sandboxes whose script ended, and failed creates) an owner keeps: past
 * either limit the oldest go, with their logs. The newest is always kept, so `status` and
 * `logs` work right after a run.
 */
export interface RunRetention {
  count: number;
  bytes: number;
}

export interface CreateSandboxOpts {
  name?: string;
  image?: string;
  persistent?: boolean;
  env?: Record<string, string>;
  cpus?: number;
  memoryMb?: number;
  pids?: number;
  openFiles?: number;
  network?: NetworkMode;
  sshAgentForwarding?: boolean;
  defaultUser?: string;
  /** Egress rules (CIDRs, domains) on top of the daemon's; see egress-rules.ts. */
  allowNet?: string[];
  denyNet?: string[];
  /**
   * The workspace (name or id) to mount, made on first use. Absent: a persistent sandbox gets
   * one named after itself (so stop/start keep its files); a one-shot run leaves nothing.
   */
  workspace?: string;
  /** Make the workspace as a fork of this one (its latest snapshot). */
  baseWorkspace?: string;
  /** The workspace's enforced size, in bytes. */
  diskBytes?: number;
}

/** What the owner may change on a sandbox after it was made. */
export interface SandboxSettings {
  sshAgentForwarding?: boolean;
  defaultUser?: string;
  /** Replace the allow-list / deny-list (after clearNet, when both are given). */
  allowNet?: string[];
  denyNet?: string[];
  /** Drop every egress rule of the sandbox. */
  clearNet?: boolean;
  /** New limits; a running sandbox gets cpus, memory and pids at once, openFiles for new processes. */
  cpus?: number;
  memoryMb?: number;
  pids?: number;
  openFiles?: number;
}

/**
 * A command's stdin: bytes given whole (written, then EOF), or 'stream' for a caller that writes
 * `ExecSession.stdin` itself. Absent: the command reads EOF at once.
 */
export type StdinOpt = Uint8Array | 'stream';

export interface ExecSandboxOpts {
  command: string[];
  env?: Record<string, string>;
  cwd?: string;
  timeoutSec?: number;
  stdin?: StdinOpt;
  /** Run under a terminal (the runtime's roost-pty); ExecSession.resize changes its size. */
  tty?: TerminalOpts;
}

export interface RunOpts extends CreateSandboxOpts {
  script: string;
  timeoutSec?: number;
  stdin?: StdinOpt;
}

export interface ExitResult extends ExitStatus {
  /** Set when Roost ended the process (timeout, cancel). */
  reason?: string;
}

/** A process in a sandbox, as the API layer consumes it. */
export interface ExecSession {
  /** stdout and stderr chunks in the order they arrived; ends when the process has exited. */
  output: AsyncIterable<OutputChunk>;
  /** Resolves once the process has exited and, for a one-shot run, its sandbox is cleaned up. */
  done: Promise<ExitResult>;
  /** Kills the process (client went away, Ctrl-C). */
  cancel(reason: string): void;
  /**
   * The process's stdin, when it was asked with `stdin: 'stream'`: write with backpressure
   * (wait for 'drain' when write() returns false), end() for EOF. Errors after the process
   * exited (EPIPE) are swallowed here.
   */
  stdin?: Writable;
  /** Sets the terminal's size (with `tty`); the process gets SIGWINCH. */
  resize?(cols: number, rows: number): void;
}

export interface RunSession extends ExecSession {
  /** The sandbox as it was made. */
  sandbox: SandboxRecord;
  /** The sandbox once the run finished (status, exit code), after `done`. */
  ended: Promise<SandboxRecord>;
}

const liveStatuses: SandboxStatus[] = ['pending', 'running', 'sleeping'];
const endedStatuses: SandboxStatus[] = ['completed', 'error'];
/** Starts the reason of a process the kernel killed for memory; scripts may match on it. */
export const oomKilledReason = 'OOM_KILLED';
/** What GNU timeout exits with, so scripts can tell a timeout from a failure. */
const timeoutExitCode = 124;

export class SandboxService {
  readonly logs: RunLogs;
  private readonly teardowns = new Set<Promise<unknown>>();

  constructor(private readonly deps: SandboxServiceDeps) {
    this.logs = new RunLogs(deps.store);
  }

  async create(ownerId: string, opts: CreateSandboxOpts): Promise<SandboxRecord> {
    return this.createWithin(ownerId, opts, await this.deps.quotas.limitsOf(ownerId));
  }

  private async createWithin(ownerId: string, opts: CreateSandboxOpts, quota: QuotaLimits): Promise<SandboxRecord> {
    const { store, clock, logger, newId, defaults, pool } = this.deps;
    const image = opts.image ?? defaults.image;
    if (opts.name !== undefined) assertValidSandboxName(opts.name);
    this.assertGrantable(opts);
    const egress = normaliseEgressRules({ allow: opts.allowNet ?? [], deny: opts.denyNet ?? [] });
    const persistent = opts.persistent ?? true;
    const wantsWorkspace = this.wantsWorkspace(opts, persistent);
    // Taken synchronously: no other claim can get the same member. A claim the quota then
    // refuses goes back to the pool untouched. A pool member has a layer of its own already:
    // a sandbox with a workspace is always made fresh.
    const pooled = wantsWorkspace ? undefined : pool?.claim(image);
    const id = pooled ?? newId('sb');
    const name = opts.name ?? generatedName(id);
    const now = clock.now();
    if (opts.name !== undefined) {
      try {
        await this.assertNameFree(ownerId, opts.name);
      } catch (error) {
        if (pooled) pool!.giveBack(image, pooled);
        throw error;
      }
    }
    let workspace: { record: WorkspaceRecord; created: boolean } | undefined;
    if (wantsWorkspace) {
      workspace = await this.deps.workspaces!.ensure(ownerId, opts.workspace ?? name, {
        ...(opts.baseWorkspace !== undefined && { base: opts.baseWorkspace }),
        ...(opts.diskBytes !== undefined && { diskBytes: opts.diskBytes }),
      });
    }
    const record: SandboxRecord = {
      id,
      ownerId,
      name,
      image,
      status: 'pending',
      persistent,
      limits: {
        cpus: opts.cpus ?? defaults.limits.cpus,
        memoryMb: opts.memoryMb ?? defaults.limits.memoryMb,
        pids: opts.pids ?? defaults.limits.pids,
        openFiles: opts.openFiles ?? defaults.limits.openFiles,
      },
      network: opts.network ?? defaults.network,
      sshAgentForwarding: opts.sshAgentForwarding ?? false,
      defaultUser: opts.defaultUser ?? 'root',
      env: opts.env ?? {},
      egress,
      exitCode: null,
      statusReason: null,
      logTrimmedBytes: 0,
      workspaceId: workspace?.record.id ?? null,
      createdAt: now,
      updatedAt: now,
    };
    try {
      // The check and the reservation (a pending record counts as live) are one transaction;
      // so is the workspace's: another live sandbox that mounts it refuses this one.
      await store.insertSandbox(record, (usage) => admitSandbox(quota, usage, record.limits));
    } catch (error) {
      if (pooled) pool!.giveBack(image, pooled);
      // Made for this sandbox only: it goes with the refusal.
      if (workspace?.created) await this.deps.workspaces!.remove(ownerId, workspace.record.id).catch(() => {});
      throw error;
    }
    let opened = false;
    try {
      // A pool member got its range when it was made; this returns that one.
      const idRange = await store.allocateIdRange(id);
      const mount = workspace ? await this.deps.workspaces!.open(workspace.record) : undefined;
      opened = mount !== undefined;
      await this.startSandbox(record, idRange, pooled !== undefined, mount);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      await store.updateSandbox(id, { status: 'error', statusReason: `could not start: ${message}` }, clock.now());
      logger.error({ sandboxId: id, err: message }, 'sandbox create failed');
      await this.teardown(record, opened).catch((cleanup: unknown) => logger.error({ sandboxId: id, err: String(cleanup) }, 'cleanup after a failed create failed'));
      if (error instanceof RoostError) throw error;
      if ((error as { code?: string }).code === 'IMAGE_NOT_FOUND') throw new RoostError('IMAGE_NOT_FOUND', message);
      throw new RoostError('RUNTIME_FAILED', `could not start sandbox ${name}: ${message}`);
    }
    if (record.defaultUser !== 'root') {
      try {
        await this.assertUserExists(record, record.defaultUser);
      } catch (error) {
        // Refused as a whole: nothing of it stays (but a workspace keeps what it had).
        await this.teardown(record, opened).catch((cleanup: unknown) => logger.error({ sandboxId: id, err: String(cleanup) }, 'cleanup after a refused create failed'));
        await store.deleteSandbox(id);
        throw error;
      }
    }
    await store.updateSandbox(id, { status: 'running' }, clock.now());
    if (workspace) this.deps.workspaces!.startSyncing(id, workspace.record.id);
    logger.info({ sandboxId: id, name, image, fromPool: pooled !== undefined, workspaceId: record.workspaceId }, 'sandbox running');
    return { ...record, status: 'running', updatedAt: clock.now() };
  }

  /**
   * Whether a new sandbox mounts a workspace: one named with -w, or (persistent ones) its own.
   * --base and --disk describe a workspace: without one they are refused, never ignored.
   */
  private wantsWorkspace(opts: CreateSandboxOpts, persistent: boolean): boolean {
    const asked = opts.workspace !== undefined || opts.baseWorkspace !== undefined || opts.diskBytes !== undefined;
    if (!this.deps.workspaces) {
      if (asked) throw new RoostError('WORKSPACES_UNAVAILABLE', 'this daemon runs without workspaces: -w, --base and --disk are not available');
      return false;
    }
    if (opts.workspace !== undefined || persistent) return true;
    if (asked) {
      throw new RoostError('VALIDATION_FAILED', '--base and --disk describe a workspace: name one with -w <name> (or keep the sandbox with -p)');
    }
    return false;
  }

  /**
   * Destroys the sandbox and, when it mounted a workspace, releases that (the final sync),
   * queued so the workspace's next open waits for both. Resolves with why the workspace is not
   * yet safe in the store, or null.
   */
  private async teardown(sandbox: SandboxRecord, mounted = true): Promise<string | null> {
    const workspaces = this.deps.workspaces;
    if (!workspaces || !sandbox.workspaceId || !mounted) {
      if (workspaces) workspaces.stopSyncing(sandbox.id);
      await this.destroyAndRelease(sandbox.id);
      return null;
    }
    return workspaces.detach(sandbox.workspaceId, sandbox.id, () => this.destroyAndRelease(sandbox.id));
  }

  /** The sandbox's workspace as status shows it (null: it has none, or workspaces are off). */
  async workspaceOf(sandbox: SandboxRecord): Promise<WorkspaceView | null> {
    if (!this.deps.workspaces || !sandbox.workspaceId) return null;
    const record = await this.deps.store.getWorkspace(sandbox.workspaceId);
    return record ? this.deps.workspaces.view(record) : null;
  }

  /** `roost sync`: the sandbox's workspace, pushed now (a running sandbox frozen around the capture). */
  async sync(ownerId: string, ref: string): Promise<{ sandbox: SandboxRecord; snapshot: WorkspaceSnapshot }> {
    const sandbox = await this.get(ownerId, ref);
    const workspaces = this.requireWorkspaces();
    if (!sandbox.workspaceId) throw new RoostError('WORKSPACE_NOT_FOUND', `sandbox ${sandbox.name} has no workspace (a one-shot run without -w keeps nothing)`);
    const running = sandbox.status === 'running';
    if (liveStatuses.includes(sandbox.status) && !running) {
      throw new RoostError('SANDBOX_NOT_RUNNING', `sandbox ${sandbox.name} is ${sandbox.status}: sync it once it runs`);
    }
    const snapshot = await workspaces.sync(sandbox.workspaceId, running ? sandbox.id : null);
    return { sandbox, snapshot };
  }

  /** `roost resize --disk`: the sandbox's workspace gets the new size (refused below what it uses). */
  async resize(ownerId: string, ref: string, diskBytes: number | null): Promise<SandboxRecord> {
    const sandbox = await this.get(ownerId, ref);
    const workspaces = this.requireWorkspaces();
    if (!sandbox.workspaceId) throw new RoostError('WORKSPACE_NOT_FOUND', `sandbox ${sandbox.name} has no workspace to resize (a one-shot run without -w keeps nothing)`);
    const record = await this.deps.store.getWorkspace(sandbox.workspaceId);
    if (!record) throw new RoostError('WORKSPACE_NOT_FOUND', `the workspace of sandbox ${sandbox.name} was removed`);
    await workspaces.resize(record, diskBytes);
    return sandbox;
  }

  private requireWorkspaces(): WorkspaceService {
    if (!this.deps.workspaces) throw new RoostError('WORKSPACES_UNAVAILABLE', 'this daemon runs without workspaces');
    return this.deps.workspaces;
  }

  /** A name held by a live or stopped sandbox is refused, naming which (the store's index has the last word). */
  private async assertNameFree(ownerId: string, name: string): Promise<void> {
    const [holder] = await this.deps.store.sandboxesNamed(ownerId, name);
    if (holder && nameHoldingStatuses.includes(holder.status)) {
      throw new RoostError('SANDBOX_NAME_TAKEN', `you already have a ${holder.status} sandbox named "${name}" (${holder.id})`);
    }
  }

  /**
   * Refuses a user the sandbox's image does not have, now rather than at the first SSH login.
   * Asked inside the sandbox: the runtime's exec resolves `user` the way every login will
   * (and the sandbox's /etc/passwd, which its root may change, is never read through a host path here).
   */
  private async assertUserExists(sandbox: SandboxRecord, user: string): Promise<void> {
    const process = await this.startProcess(sandbox, { command: ['true'], user });
    process.stdout.resume();
    process.stderr.resume();
    await process.wait();
  }

  private assertGrantable(opts: Pick<CreateSandboxOpts, 'openFiles' | 'network'>): void {
    const { maxOpenFiles, natAllowed } = this.deps.runtime.info;
    if (opts.openFiles !== undefined && opts.openFiles > maxOpenFiles) {
      throw new RoostError('LIMIT_TOO_HIGH', `an open-files limit of ${opts.openFiles} is more than this host can give (${maxOpenFiles})`);
    }
    if ((opts.network ?? this.deps.defaults.network) === 'nat' && !natAllowed) {
      throw new RoostError('NETWORK_NOT_ALLOWED', 'this daemon does not let sandboxes reach the outside (--network nat)');
    }
  }

  /** A pool member only needs its spec applied; if that fails it is replaced by a fresh one. */
  private async startSandbox(record: SandboxRecord, idRange: number, pooled: boolean, workspace?: WorkspaceMount): Promise<void> {
    const { runtime, logger } = this.deps;
    const spec: SandboxSpec = {
      id: record.id,
      hostname: record.name,
      image: record.image,
      limits: record.limits,
      network: record.network,
      env: record.env,
      idRange,
      egress: record.egress,
      ...(workspace && { workspace }),
    };
    if (pooled) {
      try {
        await runtime.configure(spec);
        return;
      } catch (error) {
        logger.warn({ sandboxId: record.id, err: (error as Error).message }, 'claimed pool member unusable; making a fresh sandbox');
        await runtime.destroy(record.id);
      }
    }
    await runtime.create(spec);
  }

  async list(ownerId: string, opts: { all?: boolean } = {}): Promise<SandboxRecord[]> {
    const sandboxes = await this.deps.store.listSandboxes({ ownerId });
    return opts.all ? sandboxes : sandboxes.filter((sandbox) => liveStatuses.includes(sandbox.status));
  }

  /**
   * By id or name. Another owner's sandbox is reported as not found, never as forbidden. A name
   * means the sandbox that holds it (live or stopped: at most one); without one, the one ended
   * run of that name; several ended runs of one name are refused, never picked between.
   */
  async get(ownerId: string, ref: string): Promise<SandboxRecord> {
    const { store } = this.deps;
    const notFound = () => new RoostError('SANDBOX_NOT_FOUND', `no sandbox named or with id "${ref}"`);
    if (isSandboxId(ref)) {
      const sandbox = await store.getSandbox(ref);
      if (!sandbox || sandbox.ownerId !== ownerId) throw notFound();
      return sandbox;
    }
    const named = await store.sandboxesNamed(ownerId, ref);
    const [first] = named;
    if (!first) throw notFound();
    if (nameHoldingStatuses.includes(first.status) || named.length === 1) return first;
    throw new RoostError(
      'SANDBOX_NAME_AMBIGUOUS',
      `${named.length} ended runs are named "${ref}": ${named.slice(0, 5).map((sandbox) => sandbox.id).join(', ')}${named.length > 5 ? ', …' : ''}`,
    );
  }

  /**
   * A sandbox for `logs.read`. One that never ran a script (made by `new`, used with exec) is
   * refused with NO_RUN_LOGS, so its owner learns why there is nothing instead of getting an
   * empty answer.
   */
  async getWithLogs(ownerId: string, ref: string): Promise<SandboxRecord> {
    const sandbox = await this.get(ownerId, ref);
    if (!(await this.logs.hasRun(sandbox))) {
      throw new RoostError('NO_RUN_LOGS', `sandbox ${sandbox.name} has no logs: it never ran a script with \`roost run\``);
    }
    return sandbox;
  }

  async exec(ownerId: string, ref: string, opts: ExecSandboxOpts): Promise<ExecSession> {
    // The quota is read only when a timeout is asked: an exec without one has nothing to check.
    if (opts.timeoutSec !== undefined) admitTimeout(await this.deps.quotas.limitsOf(ownerId), opts.timeoutSec, 'exec');
    const sandbox = await this.ensureAwake(ownerId, ref);
    const oomKillsBefore = await this.deps.runtime.oomKillCount(sandbox.id);
    const process = await this.startProcess(sandbox, {
      command: opts.command,
      env: opts.env,
      cwd: opts.cwd,
      stdin: opts.stdin !== undefined,
      tty: opts.tty,
    });
    return this.watch(sandbox, process, { timeoutSec: opts.timeoutSec, oomKillsBefore, stdin: opts.stdin }, (chunks) => chunks);
  }

  /**
   * The sandbox, ready for a new process: every way in (SSH, exec) calls this first, so a
   * sleeping sandbox will wake here. Today a sandbox that is not running is an error.
   */
  async ensureAwake(ownerId: string, ref: string): Promise<SandboxRecord> {
    const sandbox = await this.get(ownerId, ref);
    if (sandbox.status !== 'running') {
      throw new RoostError('SANDBOX_NOT_RUNNING', `sandbox ${sandbox.name} is ${sandbox.status}, not running`);
    }
    return sandbox;
  }

  /**
   * A process for an interactive client (the SSH gateway): its own stdin, stdout and stderr,
   * and a terminal when `opts.tty` is set. The caller owns it; nothing is logged or timed out.
   */
  async attach(sandbox: SandboxRecord, opts: ExecOpts): Promise<ProcessHandle> {
    return this.startProcess(sandbox, opts);
  }

  /** The command that runs an SFTP server (on stdin/stdout) in any of this runtime's sandboxes. */
  sftpServerCommand(): string[] {
    return this.deps.runtime.info.sftpServer;
  }

  /** A TCP or unix-socket connection to an address inside the sandbox (SSH -L, -W, -D). */
  connect(sandbox: SandboxRecord, address: SandboxAddress, opts?: ConnectOpts): Promise<Duplex> {
    return this.deps.runtime.connect(sandbox.id, address, opts);
  }

  /** A listener inside the sandbox whose connections come out here (SSH -R, agent, X11). */
  listen(sandbox: SandboxRecord, opts: ListenOpts): Promise<SandboxListener> {
    return this.deps.runtime.listen(sandbox.id, opts);
  }

  /** Creates a sandbox, runs the script in it and, unless persistent, removes it afterwards. */
  async run(ownerId: string, opts: RunOpts): Promise<RunSession> {
    const quota = await this.deps.quotas.limitsOf(ownerId);
    admitTimeout(quota, opts.timeoutSec, 'run');
    const sandbox = await this.createWithin(ownerId, { ...opts, persistent: opts.persistent ?? false }, quota);
    let process: ProcessHandle;
    try {
      process = await this.startProcess(sandbox, { command: ['bash', '-c', opts.script], stdin: opts.stdin !== undefined });
    } catch (error) {
      await this.finishRun(sandbox, { exitCode: 1, reason: 'the script could not be started' });
      throw error;
    }
    const logWriter = this.logs.writer(sandbox.id, { ownerId, maxBytes: quota.logBytes });
    // A fresh sandbox has had no OOM kills yet.
    const session = this.watch(sandbox, process, { timeoutSec: opts.timeoutSec, oomKillsBefore: 0, stdin: opts.stdin }, (chunks) =>
      logWriter.tee(chunks),
    );
    const done = session.done.then(async (result) => {
      await logWriter.close();
      await this.finishRun(sandbox, result);
      return result;
    });
    const ended = done.then(() => this.deps.store.getSandbox(sandbox.id)).then((record) => record ?? sandbox);
    // Callers that never ask still must not see an unhandled rejection.
    ended.catch(() => {});
    return { ...session, sandbox, done, ended };
  }

  async update(ownerId: string, ref: string, settings: SandboxSettings): Promise<SandboxRecord> {
    const sandbox = await this.get(ownerId, ref);
    const { allowNet, denyNet, clearNet, cpus, memoryMb, pids, openFiles, ...rest } = settings;
    const live = liveStatuses.includes(sandbox.status);
    if (rest.defaultUser !== undefined && rest.defaultUser !== 'root' && sandbox.status === 'running') {
      await this.assertUserExists(sandbox, rest.defaultUser);
    }
    if (cpus !== undefined || memoryMb !== undefined || pids !== undefined || openFiles !== undefined) {
      await this.changeLimits(sandbox, { cpus: cpus ?? sandbox.limits.cpus, memoryMb: memoryMb ?? sandbox.limits.memoryMb, pids: pids ?? sandbox.limits.pids, openFiles: openFiles ?? sandbox.limits.openFiles });
    }
    const patch: SandboxPatch = { ...rest };
    if (allowNet !== undefined || denyNet !== undefined || clearNet) {
      const base = clearNet ? NO_EGRESS_RULES : sandbox.egress;
      patch.egress = normaliseEgressRules({ allow: allowNet ?? base.allow, deny: denyNet ?? base.deny });
      // The runtime first: a sandbox must never run under rules its record does not show.
      if (live) await this.deps.runtime.setEgressRules(sandbox.id, patch.egress);
    }
    await this.deps.store.updateSandbox(sandbox.id, patch, this.deps.clock.now());
    this.deps.logger.info({ sandboxId: sandbox.id, settings }, 'sandbox settings changed');
    return this.get(ownerId, sandbox.id);
  }

  /**
   * New limits: the quota is checked against the new sums (in the store's transaction), then the
   * runtime applies them to a live sandbox, then the record changes; a runtime refusal leaves
   * the record as it was. A stopped sandbox gets them at its next start.
   */
  private async changeLimits(sandbox: SandboxRecord, limits: SandboxLimits): Promise<void> {
    const { store, runtime, clock, quotas } = this.deps;
    this.assertGrantable({ openFiles: limits.openFiles, network: sandbox.network });
    const quota = await quotas.limitsOf(sandbox.ownerId);
    const live = liveStatuses.includes(sandbox.status);
    // Checked first without changing anything, so the runtime never runs past the quota.
    const admit = (usage: UserUsage) => {
      const others = live
        ? { ...usage, sandboxes: usage.sandboxes - 1, cpus: usage.cpus - sandbox.limits.cpus, memoryMb: usage.memoryMb - sandbox.limits.memoryMb, pids: usage.pids - sandbox.limits.pids }
        : usage;
      if (live) admitSandbox(quota, others, limits);
    };
    admit(await store.usageOf(sandbox.ownerId));
    if (live) {
      try {
        await runtime.updateLimits(sandbox.id, limits);
      } catch (error) {
        if ((error as { code?: string }).code === 'SANDBOX_NOT_RUNNING') throw new RoostError('SANDBOX_NOT_RUNNING', `sandbox ${sandbox.name} is not running`);
        throw new RoostError('RUNTIME_FAILED', `could not change the limits of ${sandbox.name}: ${(error as Error).message}`);
      }
    }
    try {
      await store.updateSandbox(sandbox.id, { limits }, clock.now(), { admit });
    } catch (error) {
      // Another change took the quota meanwhile: the runtime goes back to what the record says.
      if (live) await runtime.updateLimits(sandbox.id, sandbox.limits).catch(() => {});
      throw error;
    }
  }

  async stop(ownerId: string, ref: string): Promise<SandboxRecord> {
    const sandbox = await this.get(ownerId, ref);
    if (liveStatuses.includes(sandbox.status)) {
      // With a workspace, the stop is done once its final sync is (or says why it is not).
      const unsafe = await this.teardown(sandbox);
      const statusReason = unsafe ? `stopped by its owner; ${unsafe}` : 'stopped by its owner';
      await this.deps.store.updateSandbox(sandbox.id, { status: 'stopped', statusReason }, this.deps.clock.now());
      this.deps.logger.info({ sandboxId: sandbox.id, workspaceUnsafe: unsafe }, 'sandbox stopped');
    }
    return this.get(ownerId, sandbox.id);
  }

  /**
   * Makes a stopped sandbox run again: same id, name, settings, limits and egress rules, a host
   * id range as at create, and the quota checked as for a new one. It mounts its workspace
   * again, so what it wrote before the stop is there (a sandbox from before workspaces gets one
   * named after itself). A running one is left as it is.
   */
  async start(ownerId: string, ref: string): Promise<SandboxRecord> {
    const { store, runtime, clock, logger, quotas } = this.deps;
    const sandbox = await this.get(ownerId, ref);
    if (liveStatuses.includes(sandbox.status)) return sandbox;
    if (sandbox.status !== 'stopped') {
      throw new RoostError('SANDBOX_ENDED', `sandbox ${sandbox.name} is ${sandbox.status}: only a stopped sandbox starts again`);
    }
    this.assertGrantable({ openFiles: sandbox.limits.openFiles, network: sandbox.network });
    const quota = await quotas.limitsOf(ownerId);
    let workspace: WorkspaceRecord | undefined;
    if (this.deps.workspaces) {
      workspace = sandbox.workspaceId ? await store.getWorkspace(sandbox.workspaceId) : undefined;
      if (!workspace) {
        if (sandbox.workspaceId) throw new RoostError('WORKSPACE_NOT_FOUND', `the workspace of sandbox ${sandbox.name} was removed: remove the sandbox (\`roost rm ${sandbox.name}\`) and make it again`);
        workspace = (await this.deps.workspaces.ensure(ownerId, sandbox.name)).record;
        await store.updateSandbox(sandbox.id, { workspaceId: workspace.id }, clock.now());
        sandbox.workspaceId = workspace.id;
      }
    }
    const claimed = await store.updateSandbox(
      sandbox.id,
      { status: 'pending', statusReason: null, exitCode: null },
      clock.now(),
      { fromStatuses: ['stopped'], admit: (usage) => admitSandbox(quota, usage, sandbox.limits) },
    );
    // Another start (or an rm) came first.
    if (!claimed) return this.get(ownerId, sandbox.id);
    let opened = false;
    try {
      const idRange = await store.allocateIdRange(sandbox.id);
      const mount = workspace ? await this.deps.workspaces!.open(workspace) : undefined;
      opened = mount !== undefined;
      await runtime.create({
        id: sandbox.id,
        hostname: sandbox.name,
        image: sandbox.image,
        limits: sandbox.limits,
        network: sandbox.network,
        env: sandbox.env,
        idRange,
        egress: sandbox.egress,
        ...(mount && { workspace: mount }),
      });
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      logger.error({ sandboxId: sandbox.id, err: message }, 'sandbox start failed');
      await this.teardown(sandbox, opened).catch((cleanup: unknown) => logger.error({ sandboxId: sandbox.id, err: String(cleanup) }, 'cleanup after a failed start failed'));
      // Still stopped, so it keeps its name and can be tried again.
      await store.updateSandbox(sandbox.id, { status: 'stopped', statusReason: `could not start: ${message}` }, clock.now());
      if (error instanceof RoostError) throw error;
      if ((error as { code?: string }).code === 'IMAGE_NOT_FOUND') throw new RoostError('IMAGE_NOT_FOUND', message);
      throw new RoostError('RUNTIME_FAILED', `could not start sandbox ${sandbox.name}: ${message}`);
    }
    await store.updateSandbox(sandbox.id, { status: 'running' }, clock.now());
    if (workspace) this.deps.workspaces!.startSyncing(sandbox.id, workspace.id);
    logger.info({ sandboxId: sandbox.id, name: sandbox.name }, 'sandbox started');
    return this.get(ownerId, sandbox.id);
  }

  /** Stops a live sandbox and starts it again (a stopped one is only started). */
  async restart(ownerId: string, ref: string): Promise<SandboxRecord> {
    const sandbox = await this.stop(ownerId, ref);
    return this.start(ownerId, sandbox.id);
  }

  /**
   * Removes the owner's ended runs (and failed creates) with their logs and, with `stopped`,
   * the stopped sandboxes; never a live one. Resolves with what went, as it was.
   */
  async prune(ownerId: string, opts: { stopped?: boolean } = {}): Promise<SandboxRecord[]> {
    const statuses: SandboxStatus[] = opts.stopped ? [...endedStatuses, 'stopped'] : endedStatuses;
    const removed: SandboxRecord[] = [];
    for (const sandbox of await this.deps.store.listSandboxes({ ownerId })) {
      if (!statuses.includes(sandbox.status)) continue;
      if (await this.forget(sandbox.id, statuses)) removed.push(sandbox);
    }
    if (removed.length > 0) this.deps.logger.info({ ownerId, removed: removed.length }, 'sandboxes pruned');
    return removed;
  }

  /** Deletes a record that is not live (checked in the store) and its logs. */
  private async forget(id: string, statuses: SandboxStatus[]): Promise<boolean> {
    await this.settle();
    if (!(await this.deps.store.deleteSandbox(id, { fromStatuses: statuses }))) return false;
    await this.logs.remove(id);
    // Its runtime part went at stop or at the end of its run (settled above); what a failed
    // teardown left is doctor's residue, and reconcile() removes it at the next start.
    return true;
  }

  /** Past the daemon's retention limits, the owner's oldest ended runs go (the newest always stays). */
  private async applyRetention(ownerId: string): Promise<void> {
    const retention = this.deps.runRetention;
    if (!retention) return;
    const runs = await this.deps.store.listEndedRuns(ownerId);
    let bytes = 0;
    const expired: string[] = [];
    runs.forEach((run, index) => {
      bytes += run.logBytes;
      if (index > 0 && (index >= retention.count || bytes > retention.bytes)) expired.push(run.id);
    });
    for (const id of expired) {
      if (await this.deps.store.deleteSandbox(id, { fromStatuses: endedStatuses })) await this.logs.remove(id);
    }
    if (expired.length > 0) this.deps.logger.info({ ownerId, removed: expired.length, ...retention }, 'oldest ended runs removed (retention)');
  }

  async remove(ownerId: string, ref: string): Promise<void> {
    const sandbox = await this.get(ownerId, ref);
    // Its workspace stays (with a final sync when it was running); `roost workspace rm` removes it.
    const unsafe = liveStatuses.includes(sandbox.status) ? await this.teardown(sandbox) : (await this.destroyAndRelease(sandbox.id), null);
    await this.logs.remove(sandbox.id);
    await this.deps.store.deleteSandbox(sandbox.id);
    this.deps.logger.info({ sandboxId: sandbox.id, workspaceId: sandbox.workspaceId, workspaceUnsafe: unsafe }, 'sandbox removed');
  }

  /**
   * Brings the store and the runtime back in line after a restart: one-shot runs cut short by
   * the restart are removed and marked as such, persistent sandboxes the runtime still holds
   * are kept, and whatever the runtime holds that the store does not know is destroyed.
   */
  async reconcile(): Promise<void> {
    const { store, runtime, clock, logger } = this.deps;
    const held = new Set(await runtime.list());
    const known = new Set<string>();
    const owners = new Set<string>();
    for (const sandbox of await store.listSandboxes({})) {
      known.add(sandbox.id);
      owners.add(sandbox.ownerId);
      if (!liveStatuses.includes(sandbox.status)) continue;
      if (sandbox.persistent && held.has(sandbox.id)) {
        if (sandbox.workspaceId && sandbox.status === 'running') this.deps.workspaces?.startSyncing(sandbox.id, sandbox.workspaceId);
        continue;
      }
      if (sandbox.workspaceId && this.deps.workspaces) {
        const unsafe = await this.deps.workspaces.detach(sandbox.workspaceId, sandbox.id, () => runtime.destroy(sandbox.id));
        if (unsafe) logger.warn({ sandboxId: sandbox.id, workspaceId: sandbox.workspaceId, err: unsafe }, 'workspace release after a restart failed');
      } else await runtime.destroy(sandbox.id);
      const reason = sandbox.persistent ? 'its processes ended while the daemon was down' : 'the daemon restarted during the run';
      await store.updateSandbox(sandbox.id, { status: sandbox.persistent ? 'stopped' : 'error', statusReason: reason }, clock.now());
      logger.warn({ sandboxId: sandbox.id, reason }, 'sandbox reconciled');
    }
    for (const id of held) {
      if (known.has(id)) continue;
      await runtime.destroy(id);
      logger.warn({ sandboxId: id }, 'removed a sandbox the store did not know');
    }
    // Adopted sandboxes keep their id ranges, and so does anything the runtime could not
    // remove (its files are still owned by its range); every other range (of the sandboxes
    // just removed, of pool members from before the restart, of a create cut short) is free.
    const stillHeld = new Set(await runtime.list());
    for (const { holderId } of await store.listIdRanges()) {
      if (!stillHeld.has(holderId)) await store.releaseIdRange(holderId);
    }
    // The limits may have been lowered since the last start.
    for (const ownerId of owners) await this.applyRetention(ownerId);
  }

  /** Its range is free for another sandbox only once nothing of it is left on the host. */
  private async destroyAndRelease(id: string): Promise<void> {
    await this.deps.runtime.destroy(id);
    await this.deps.store.releaseIdRange(id);
  }

  private async startProcess(sandbox: SandboxRecord, opts: ExecOpts): Promise<ProcessHandle> {
    try {
      return await this.deps.runtime.exec(sandbox.id, opts);
    } catch (error) {
      if ((error as { code?: string }).code === 'SANDBOX_NOT_RUNNING') {
        throw new RoostError('SANDBOX_NOT_RUNNING', `sandbox ${sandbox.name} has no running processes`);
      }
      if ((error as { code?: string }).code === 'USER_NOT_FOUND') {
        throw new RoostError('USER_NOT_FOUND', `${(error as Error).message} (sandbox ${sandbox.name})`);
      }
      throw new RoostError('RUNTIME_FAILED', `could not exec in ${sandbox.name}: ${(error as Error).message}`);
    }
  }

  /** Adds what every process gets: its timeout, cancel, and telling an OOM kill apart. */
  private watch(
    sandbox: SandboxRecord,
    process: ProcessHandle,
    opts: { timeoutSec?: number; oomKillsBefore: number; stdin?: StdinOpt },
    observe: (chunks: AsyncIterable<OutputChunk>) => AsyncIterable<OutputChunk>,
  ): ExecSession {
    const { timeoutSec } = opts;
    // A write after the process exited fails with EPIPE; unheard, that error would end roostd.
    process.stdin?.on('error', () => {});
    if (opts.stdin instanceof Uint8Array) process.stdin?.end(opts.stdin);
    let endedBy: { reason: string; exitCode?: number } | undefined;
    const end = (reason: string, exitCode?: number) => {
      endedBy ??= { reason, exitCode };
      process.kill('SIGKILL');
    };
    const timer =
      timeoutSec === undefined
        ? undefined
        : this.deps.clock.setTimeout(() => end(`timed out after ${timeoutSec} s`, timeoutExitCode), timeoutSec * 1000);
    const done = process.wait().then(async (status): Promise<ExitResult> => {
      timer?.cancel();
      if (endedBy) return { ...status, exitCode: endedBy.exitCode ?? status.exitCode, reason: endedBy.reason };
      if (status.signal === 'SIGKILL' && (await this.deps.runtime.oomKillCount(sandbox.id)) > opts.oomKillsBefore) {
        return { ...status, reason: `${oomKilledReason}: the sandbox ran out of memory (limit ${sandbox.limits.memoryMb} MB)` };
      }
      return status;
    });
    return {
      output: observe(mergeOutput(process.stdout, process.stderr)),
      done,
      cancel: (reason) => end(reason),
      ...(opts.stdin === 'stream' && process.stdin && { stdin: process.stdin }),
      ...(process.resize && { resize: (cols: number, rows: number) => process.resize!(cols, rows) }),
    };
  }

  private async finishRun(sandbox: SandboxRecord, result: ExitResult): Promise<void> {
    const { runtime, store, clock, logger } = this.deps;
    // A timeout is the script's own outcome; a cancel or an OOM kill is an error of the run.
    const failed = result.reason !== undefined && result.exitCode !== timeoutExitCode;
    const status: SandboxStatus = sandbox.persistent ? 'running' : failed ? 'error' : 'completed';
    // A workspace's release is queued before the record stops holding it, so a next run that
    // mounts it waits for this one's unmount and final sync.
    if (!sandbox.persistent && sandbox.workspaceId) this.startTeardown(sandbox);
    await store.updateSandbox(
      sandbox.id,
      { status, exitCode: result.exitCode, statusReason: result.reason ?? null },
      clock.now(),
    );
    logger.info({ sandboxId: sandbox.id, exitCode: result.exitCode, reason: result.reason }, 'run finished');
    if (!sandbox.persistent) {
      await this.applyRetention(sandbox.ownerId).catch((error: unknown) => logger.error({ ownerId: sandbox.ownerId, err: String(error) }, 'run retention failed'));
    }
    // The client gets its exit status without waiting for the teardown (~10 ms of unmount and
    // rm); settle() waits for it, and reconcile() finishes it after a crash.
    if (!sandbox.persistent && !sandbox.workspaceId) this.startTeardown(sandbox);
  }

  private startTeardown(sandbox: SandboxRecord): void {
    const { logger } = this.deps;
    const teardown = this.teardown(sandbox)
      .then((unsafe) => {
        if (unsafe) logger.warn({ sandboxId: sandbox.id, workspaceId: sandbox.workspaceId, err: unsafe }, 'workspace release after a run failed');
      })
      .catch((error: unknown) => logger.error({ sandboxId: sandbox.id, err: String(error) }, 'sandbox teardown failed'))
      .finally(() => this.teardowns.delete(teardown));
    this.teardowns.add(teardown);
  }

  /**
   * What `roost doctor` reports: missing host prerequisites, residue the runtime finds, and
   * disagreements between the store and the runtime. Admins only: it names every sandbox.
   */
  async diagnose(user: UserRecord): Promise<RuntimeDiagnosis> {
    if (!user.isAdmin) throw new RoostError('FORBIDDEN', 'only an admin can run the doctor');
    const { runtime, store } = this.deps;
    await this.settle();
    const [diagnosis, heldIds, records] = await Promise.all([runtime.diagnose(), runtime.list(), store.listSandboxes({})]);
    const held = new Set(heldIds);
    // Pool members (ready or being made) are held on purpose and get a record only when claimed.
    for (const id of this.deps.pool?.held() ?? []) held.delete(id);
    const leftovers = [...diagnosis.leftovers];
    for (const record of records) {
      const live = liveStatuses.includes(record.status);
      if (live && !held.has(record.id)) leftovers.push({ sandboxId: record.id, what: `record says ${record.status} but the runtime holds no such sandbox` });
      if (!live && held.has(record.id)) leftovers.push({ sandboxId: record.id, what: `record says ${record.status} but the runtime still holds it` });
      held.delete(record.id);
    }
    for (const id of held) leftovers.push({ sandboxId: id, what: 'held by the runtime but unknown to the store' });
    return { problems: diagnosis.problems, leftovers };
  }

  /** Resolves once every one-shot sandbox that ended has been torn down (for shutdown and tests). */
  async settle(): Promise<void> {
    await Promise.all([...this.teardowns]);
    await this.deps.workspaces?.settle();
  }
}

function generatedName(id: string): string {
  return `sb-${id.slice(3, 11).toLowerCase()}`;
}
