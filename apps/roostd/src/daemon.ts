// The composition root: wires the adapters into core and builds the servers. `buildDaemon`
// makes everything; `listen` starts serving; `close` undoes both.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { destination, pino, type Logger as PinoLogger } from 'pino';
import { AuthService, SandboxService, type Clock, type Runtime, type Store } from '@roost/core';
import { buildHttpApi } from '@roost/http-api';
import { checkHostPrerequisites, createImageStore, createOciRuntime } from '@roost/runtime-oci';
import { openSqliteStore } from '@roost/store-sqlite';
import { splitAddr, type DaemonConfig } from './config.js';
import { version } from './version.js';

export interface BuildDaemonOpts {
  /** Use this runtime instead of the default OCI driver (tests use a fake). */
  runtime?: Runtime;
  /** Where the JSON log lines go (default stdout). */
  logDestination?: NodeJS.WritableStream;
}

export interface Daemon {
  config: DaemonConfig;
  logger: PinoLogger;
  adminTokenFile: string;
  runtimeName: string;
  /** Makes a (non-admin) user and returns a token for it. */
  createUserWithToken(name: string): Promise<string>;
  /** Starts the servers; resolves with the URL the API answers on. */
  listen(): Promise<{ httpUrl: string }>;
  close(): Promise<void>;
}

export class PrerequisiteError extends Error {}

const systemClock: Clock = {
  now: () => new Date(),
  setTimeout: (fn, ms) => {
    const timer = setTimeout(fn, ms);
    return { cancel: () => clearTimeout(timer) };
  },
};

export function newId(prefix: string): string {
  // 16 random bytes in base32-ish lowercase: unguessable, URL- and hostname-safe.
  return `${prefix}_${randomBytes(16).toString('base64url').replace(/[-_]/g, '').toLowerCase().slice(0, 20)}`;
}

const tokenCrypto = {
  newToken: () => `roost_${randomBytes(32).toString('base64url')}`,
  sha256Hex: (value: string) => createHash('sha256').update(value).digest('hex'),
};

export async function buildDaemon(config: DaemonConfig, opts: BuildDaemonOpts = {}): Promise<Daemon> {
  const logger = pino({ level: config.logLevel, base: { service: 'roostd' } }, opts.logDestination ?? destination(1));
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
      }));
  } catch (error) {
    await store.close();
    throw error;
  }
  const deps = { store, clock: systemClock, logger, newId };
  const auth = new AuthService({ ...deps, crypto: tokenCrypto });
  const sandboxes = new SandboxService({
    ...deps,
    runtime,
    defaults: { image: 'debian', limits: config.defaults },
  });
  await sandboxes.reconcile();
  const adminTokenFile = join(config.dataDir, 'admin-token');
  await ensureAdminTokenFile(auth, adminTokenFile, logger);

  const app = buildHttpApi({
    sandboxes,
    auth,
    logger,
    version,
    runtimeName: runtime.info.engine,
    adminTokenFile,
  });

  return {
    config,
    logger,
    adminTokenFile,
    runtimeName: runtime.info.engine,
    async createUserWithToken(name) {
      const user = await auth.createUser(name);
      return auth.createToken(user.id, `token of ${name}`);
    },
    async listen() {
      const { host, port } = splitAddr(config.httpAddr);
      await app.listen({ host, port });
      const address = app.server.address() as AddressInfo;
      const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
      return { httpUrl: `http://${shownHost}:${address.port}` };
    },
    async close() {
      await app.close();
      await sandboxes.settle();
      await runtime.close();
      await store.close();
      logger.info({}, 'roostd stopped');
      logger.flush();
    },
  };
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
