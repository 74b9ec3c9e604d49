// The composition root: wires the adapters into core and builds the servers. `buildDaemon`
// makes everything; `listen` starts serving; `close` undoes both.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import type { AddressInfo } from 'node:net';
import { destination, pino, type Logger as PinoLogger } from 'pino';
import {
  AuthService,
  maxTimerDelayMs,
  Quotas,
  SandboxFiles,
  SandboxService,
  WarmPool,
  WorkspaceService,
  type Clock,
  type Logger,
  type Runtime,
  type SandboxLimits,
  type Store,
  type Workspaces,
} from '@roost/core';
import { buildHttpApi, type RegisteredRoute } from '@roost/http-api';
import { checkHostPrerequisites, createImageStore, createOciRuntime } from '@roost/runtime-oci';
import { openLocalWorkspaces, poolProblems } from '@roost/workspaces-local';
import { describeStore, openS3Workspaces, SyncEngine } from '@roost/workspaces-s3';
import { loadOrCreateHostKeys, SshGateway } from '@roost/ssh-gateway';
import { openSqliteStore } from '@roost/store-sqlite';
import { defaultDataDir, splitAddr, type DaemonConfig } from './config.js';
import { DiskUploads } from './uploads.js';
import { version } from './version.js';

export interface BuildDaemonOpts {
  /** Use this runtime instead of the default OCI driver (tests use a fake). */
  runtime?: Runtime;
  /** Where the JSON log lines go (default stdout). */
  logDestination?: NodeJS.WritableStream;
  /**
   * The workspaces sandboxes mount (docs/workspaces.md): an instance, or a factory called once
   * the runtime is up. Absent: the local btrfs pool in the data dir (workspaces-local) with the
   * real runtime; none with an injected one (-w refused, a sandbox's files go with it).
   */
  workspaces?: Workspaces | ((context: { config: DaemonConfig; logger: Logger; runtime: Runtime }) => Promise<Workspaces>);
}

export interface Daemon {
  config: DaemonConfig;
  logger: PinoLogger;
  adminTokenFile: string;
  runtimeName: string;
  /** Every route the HTTP server registered (the auth test walks them). */
  httpRoutes: readonly RegisteredRoute[];
  /** Ready sandboxes per image; undefined when the pool is off. */
  pool?: WarmPool;
  /** The Workspaces the daemon mounts; undefined without workspaces. */
  workspaces?: Workspaces;
  /** Removes every sandbox of every user, records included (tests clean up with it; roostd never does). */
  removeAllSandboxes(): Promise<void>;
  /** Makes a (non-admin) user and returns a token for it. */
  createUserWithToken(name: string): Promise<string>;
  /** Starts the servers; resolves with the URL the API answers on and the SSH gateway's port. */
  listen(): Promise<{ httpUrl: string; sshPort: number }>;
  close(): Promise<void>;
}

export class PrerequisiteError extends Error {}

/** One of the daemon's addresses is taken; `variable` is the setting that moves it. */
export class AddressInUseError extends Error {
  constructor(
    readonly addr: string,
    readonly variable: string,
  ) {
    super(`${addr} is already in use`);
  }
}

async function listenOn<T>(addr: string, variable: string, start: () => Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') throw new AddressInUseError(addr, variable);
    throw error;
  }
}

/** Wall-clock time and timers. A timer's callback runs outside any caller's try: a throw or a rejection in it is logged, never fatal. */
function systemClock(logger: Logger): Clock {
  const failed = (error: unknown) => logger.error({ err: error }, 'timer callback failed');
  return {
    now: () => new Date(),
    setTimeout: (fn, ms) => {
      // Node fires a longer delay after 1 ms (TimeoutOverflowWarning); callers check first, and
      // this makes sure none that slipped through ends something early.
      if (!(ms <= maxTimerDelayMs)) throw new RangeError(`a timer cannot wait ${ms} ms (at most ${maxTimerDelayMs})`);
      const timer = setTimeout(() => {
        try {
          const result = fn() as unknown;
          if (result instanceof Promise) result.catch(failed);
        } catch (error) {
          failed(error);
        }
      }, ms);
      return { cancel: () => clearTimeout(timer) };
    },
  };
}

/**
 * Log lines waiting for a slow stdout (a stalled pipe or journal) are capped: past this many
 * bytes new lines are dropped instead of growing roostd's memory (every request logs a line).
 */
const maxPendingLogBytes = 16 * 1024 * 1024;

export function newId(prefix: string): string {
  // 16 random bytes in base32-ish lowercase: unguessable, URL- and hostname-safe.
  return `${prefix}_${randomBytes(16).toString('base64url').replace(/[-_]/g, '').toLowerCase().slice(0, 20)}`;
}

const tokenCrypto = {
  newToken: () => `roost_${randomBytes(32).toString('base64url')}`,
  sha256Hex: (value: string) => createHash('sha256').update(value).digest('hex'),
  sha256Base64: (data: Uint8Array) => createHash('sha256').update(data).digest('base64'),
};

export async function buildDaemon(config: DaemonConfig, opts: BuildDaemonOpts = {}): Promise<Daemon> {
  const logger = pino({ level: config.logLevel, base: { service: 'roostd' } }, opts.logDestination ?? destination({ dest: 1, maxLength: maxPendingLogBytes }));
  if (!opts.runtime) {
    const problems = await checkHostPrerequisites();
    if (problems.length > 0) {
      const lines = problems.map((p) => `  - ${p.problem}\n    fix: ${p.fix}`).join('\n');
      throw new PrerequisiteError(`roostd cannot run sandboxes on this host:\n${lines}`);
    }
  }
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  const store: Store = await openSqliteStore({ path: join(config.dataDir, 'roost.db') });
  let runtime: Runtime;
  try {
    runtime =
      opts.runtime ??
      (await createOciRuntime({
        stateDir: join(config.dataDir, 'runtime'),
        images: createImageStore({ cacheDir: config.imageCacheDir, logger }),
        logger,
        engine: config.runtime,
        network: { allowNat: config.network.allowNat, dnsServers: config.network.dnsServers, egressAllowCidrs: config.network.egressAllowCidrs },
        instance: {
          // The default data dir is the default instance, whose names are those of roostd before instances.
          name: config.instance ?? (config.dataDir === defaultDataDir ? 'default' : undefined),
          subnet: config.network.subnet,
        },
        lxcfs: config.lxcfs,
        // doctor: a workspace pool that cannot be mounted, with its fix.
        extraProblems: () => poolProblems(config.dataDir),
      }));
  } catch (error) {
    await store.close();
    throw error;
  }
  const deps = { store, clock: systemClock(logger), logger, newId };
  const auth = new AuthService({ ...deps, crypto: tokenCrypto });
  const limits = { ...config.defaults, openFiles: Math.min(config.defaults.openFiles, runtime.info.maxOpenFiles) };
  if (limits.openFiles < config.defaults.openFiles) {
    logger.warn({ configured: config.defaults.openFiles, used: limits.openFiles }, 'default open-files limit lowered to the most this host can give');
  }
  const pool = warmPool(config, limits, runtime, store, logger);
  const workspaceQuota = { workspaces: config.workspaces.perUser, diskBytes: config.workspaces.diskBytesPerUser };
  const workspacesFrom = opts.workspaces ?? (opts.runtime ? undefined : localWorkspaces);
  const quotas = new Quotas({ store, defaults: config.quota, now: () => deps.clock.now(), ...(workspacesFrom && { workspaces: workspaceQuota }) });
  let workspaces: WorkspaceService | undefined;
  let workspacesPort: Workspaces | undefined;
  if (workspacesFrom) {
    try {
      workspacesPort = typeof workspacesFrom === 'function' ? await workspacesFrom({ config, logger, runtime }) : workspacesFrom;
    } catch (error) {
      await runtime.close();
      await store.close();
      throw error;
    }
    workspaces = new WorkspaceService({
      ...deps,
      runtime,
      workspaces: workspacesPort,
      syncIntervalMs: config.workspaces.syncIntervalMs,
      quota: workspaceQuota,
    });
  }
  const sandboxes = new SandboxService({
    workspaces,
    ...deps,
    runtime,
    pool,
    quotas,
    runRetention: config.runRetention,
    defaults: { image: 'debian', limits, network: config.network.default },
  });
  await sandboxes.reconcile();
  pool?.start();
  // Absolute: /healthz names it to `roost login`, which trusts only an absolute path.
  const adminTokenFile = join(resolve(config.dataDir), 'admin-token');
  await ensureAdminTokenFile(auth, adminTokenFile, logger);

  const hostKeys = await loadOrCreateHostKeys(join(config.dataDir, 'ssh'), logger);
  const gateway = new SshGateway({
    auth,
    sandboxes,
    hostKeys,
    logger,
    keepalive: { intervalMs: config.ssh.keepaliveIntervalMs, countMax: config.ssh.keepaliveCountMax },
    limits: config.ssh,
  });
  const sshListen = splitAddr(config.sshAddr);
  let sshPort = sshListen.port;

  const files = new SandboxFiles(sandboxes, { maxUploadBytes: config.files.maxUploadBytes });
  const uploads = await DiskUploads.open({
    dir: join(config.dataDir, 'uploads'),
    ...config.files,
    now: () => deps.clock.now(),
    logger,
  });
  const { app, registeredRoutes } = buildHttpApi({
    sandboxes,
    files,
    uploads,
    workspaces,
    auth,
    quotas,
    logger,
    version,
    runtimeName: runtime.info.engine,
    adminTokenFile,
    dataDir: resolve(config.dataDir),
    acceptSshStream: (stream, remoteAddress, sandboxId) => gateway.acceptStream(stream, remoteAddress, sandboxId),
    sshInfo: () => ({ host: sshListen.host, port: sshPort, hostKeys: hostKeys.map((key) => key.publicKey) }),
    limits: config.http,
  });

  return {
    config,
    logger,
    adminTokenFile,
    runtimeName: runtime.info.engine,
    httpRoutes: registeredRoutes,
    async removeAllSandboxes() {
      for (const sandbox of await store.listSandboxes({})) {
        await sandboxes.remove(sandbox.ownerId, sandbox.id).catch((error: unknown) => logger.error({ sandboxId: sandbox.id, err: String(error) }, 'remove failed'));
      }
    },
    async createUserWithToken(name) {
      const user = await auth.createUser(name);
      return auth.createToken(user.id, `token of ${name}`);
    },
    async listen() {
      const { host, port } = splitAddr(config.httpAddr);
      await listenOn(config.httpAddr, 'ROOST_HTTP_ADDR', () => app.listen({ host, port }));
      const address = app.server.address() as AddressInfo;
      const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
      ({ port: sshPort } = await listenOn(config.sshAddr, 'ROOST_SSH_ADDR', () => gateway.listen(sshListen.host, sshListen.port)));
      return { httpUrl: `http://${shownHost}:${address.port}`, sshPort };
    },
    pool,
    workspaces: workspacesPort,
    async close() {
      await gateway.close();
      await app.close();
      await pool?.close();
      await sandboxes.settle();
      await workspaces?.close();
      await workspacesPort?.close();
      await runtime.close();
      await store.close();
      logger.info({}, 'roostd stopped');
      logger.flush();
    },
  };
}

/** The workspaces on this host's disk: the btrfs pool in the data dir (docs/workspaces.md),
 *  synced to the workspace store when one is configured (ROOST_S3_URL…). */
async function localWorkspaces({ config, logger }: { config: DaemonConfig; logger: Logger }): Promise<Workspaces> {
  const local = await openLocalWorkspaces({
    dataDir: config.dataDir,
    poolBytes: config.workspaces.poolBytes,
    keepSnapshots: config.workspaces.keepSnapshots,
    logger,
  });
  if (!config.workspaceStore) return local;
  const engine = new SyncEngine({
    store: config.workspaceStore,
    cacheDir: join(config.dataDir, 'workspace-store', 'cache'),
    keepSnapshots: config.workspaces.keepSnapshots,
    logger,
  });
  logger.info({ store: describeStore(config.workspaceStore) }, 'workspaces sync to the workspace store');
  return openS3Workspaces({ local, s3: engine, stateDir: join(config.dataDir, 'workspace-store', 'state'), logger });
}

/** On the first start, and whenever the file went missing, writes a fresh admin token (0600). */
async function ensureAdminTokenFile(auth: AuthService, file: string, logger: PinoLogger): Promise<void> {
  const { user, newToken } = await auth.ensureAdmin();
  if (!newToken) {
    const present = await readFile(file, 'utf8').then(
      () => true,
      () => false,
    );
    if (present) return;
  }
  const token = newToken ?? (await auth.createToken(user.id, 'admin token remade: the file was missing'));
  await writeFile(file, `${token}\n`, { mode: 0o600 });
  logger.info({ file }, 'admin token written');
}

/**
 * The pool as configured, shrunk so that its members' memory limits add up to at most
 * `memoryShare` of the host's memory. Undefined when that leaves no member.
 */
function warmPool(config: DaemonConfig, limits: SandboxLimits, runtime: Runtime, store: Store, logger: Logger): WarmPool | undefined {
  const { size, images, memoryShare } = config.pool;
  const memberBytes = limits.memoryMb * 1024 * 1024;
  const budget = Math.floor((memoryShare * totalmem()) / memberBytes);
  const perImage = images.length > 0 ? Math.min(size, Math.floor(budget / images.length)) : 0;
  if (perImage < size) {
    logger.warn({ size, perImage, memoryShare, memberMb: limits.memoryMb }, 'warm pool shrunk to stay within its memory share');
  }
  if (perImage === 0) return undefined;
  logger.info({ images, perImage }, 'warm pool on');
  return new WarmPool({ runtime, idRanges: store, logger, newId, limits, sizes: Object.fromEntries(images.map((image) => [image, perImage])) });
}
