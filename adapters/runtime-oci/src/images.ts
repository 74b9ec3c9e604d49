import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import type { Logger } from '@roost/core';
import { SHIFT_BASE } from './constants.js';
import { pidAlive } from './proc.js';
import { shiftOwnership } from './shift.js';

/** What the default image is made of; its hash names the cache entry, so any change rebuilds. */
export const defaultImageRecipe = {
  name: 'debian',
  tool: 'mmdebstrap',
  suite: 'bookworm',
  variant: 'minbase',
  packages: [
    'bash', 'coreutils', 'curl', 'wget', 'git', 'python3', 'nodejs', 'rsync',
    'openssh-sftp-server', 'ca-certificates', 'procps', 'iproute2', 'less',
  ],
  // The same mirrors as the host's /etc/apt/sources.list.d/debian.sources.
  mirrors: [
    'deb http://deb.debian.org/debian bookworm main',
    'deb http://deb.debian.org/debian bookworm-updates main',
    'deb http://deb.debian.org/debian-security bookworm-security main',
  ],
  shiftBase: SHIFT_BASE,
} as const;

export type ImageRecipe = typeof defaultImageRecipe;

export const DEFAULT_IMAGE_CACHE = '/var/cache/roost/images';

export interface ImageStore {
  readonly cacheDir: string;
  /** Path of the uid-shifted rootfs of a built image; throws code IMAGE_NOT_FOUND otherwise. */
  resolve(ref: string): Promise<string>;
  /** Builds the default image unless it is cached. Safe to call from several processes. */
  ensureDefaultImage(opts?: { onProgress?(line: string): void }): Promise<{ ref: 'debian'; rootfs: string; built: boolean }>;
  readonly defaultImageRecipe: ImageRecipe;
}

export function recipeHash(recipe: ImageRecipe): string {
  return createHash('sha256').update(JSON.stringify(recipe)).digest('hex').slice(0, 16);
}

function imageNotFound(ref: string, known: boolean): Error {
  const message = known
    ? `image "${ref}" is not built yet: run \`npm start\` (it builds it) or ` +
      '`node adapters/runtime-oci/dist/build-image.js`'
    : `unknown image "${ref}": only "debian" (the default image) is available`;
  return Object.assign(new Error(message), { code: 'IMAGE_NOT_FOUND' });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function createImageStore(opts: { cacheDir?: string; logger: Logger }): ImageStore {
  const cacheDir = opts.cacheDir ?? DEFAULT_IMAGE_CACHE;
  const log = opts.logger;
  const hash = recipeHash(defaultImageRecipe);
  const entry = path.join(cacheDir, hash);
  const rootfs = path.join(entry, 'rootfs');
  const ready = () => existsSync(path.join(entry, 'ready'));

  async function resolve(ref: string): Promise<string> {
    if (ref !== 'debian' && ref !== hash) throw imageNotFound(ref, false);
    if (!ready()) throw imageNotFound(ref, true);
    return rootfs;
  }

  /** Takes the per-image lock; a lock whose holder died is stale and taken over. */
  async function lock(onProgress?: (l: string) => void): Promise<(() => Promise<void>) | 'ready'> {
    const lockPath = `${entry}.lock`;
    let told = false;
    for (;;) {
      if (ready()) return 'ready';
      try {
        const fh = await fs.open(lockPath, 'wx');
        await fh.writeFile(String(process.pid));
        await fh.close();
        return () => fs.rm(lockPath, { force: true });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const holder = Number(await fs.readFile(lockPath, 'utf8').catch(() => ''));
      if (holder && !pidAlive(holder)) {
        log.warn({ lockPath, holder }, 'removing stale image build lock');
        await fs.rm(lockPath, { force: true });
        continue;
      }
      if (!told) {
        onProgress?.(`another process (pid ${holder || '?'}) is building the image; waiting`);
        told = true;
      }
      await sleep(500);
    }
  }

  async function ensureDefaultImage(o: { onProgress?(line: string): void } = {}) {
    if (ready()) return { ref: 'debian' as const, rootfs, built: false };
    await fs.mkdir(cacheDir, { recursive: true });
    const release = await lock(o.onProgress);
    if (release === 'ready') return { ref: 'debian' as const, rootfs, built: false };
    try {
      await discardHalfBuilt(cacheDir, hash, entry, log);
      const tmp = path.join(cacheDir, `${hash}.tmp-${process.pid}`);
      await fs.mkdir(tmp);
      const t0 = Date.now();
      await mmdebstrap(defaultImageRecipe, path.join(tmp, 'rootfs'), (l) => o.onProgress?.(l));
      const buildMs = Date.now() - t0;
      o.onProgress?.('shifting ownership for the user namespace');
      const t1 = Date.now();
      const files = await shiftOwnership(path.join(tmp, 'rootfs'), SHIFT_BASE);
      const shiftMs = Date.now() - t1;
      await fs.writeFile(
        path.join(tmp, 'ready'),
        JSON.stringify({ recipe: defaultImageRecipe, builtAt: new Date().toISOString(), buildMs, shiftMs, files }, null, 2),
      );
      await fs.rename(tmp, entry);
      log.info({ rootfs, buildMs, shiftMs, files }, 'default image built');
      return { ref: 'debian' as const, rootfs, built: true };
    } finally {
      await release();
    }
  }

  return { cacheDir, resolve, ensureDefaultImage, defaultImageRecipe };
}

/** Removes leftovers of a build that crashed: temp dirs and an entry without its ready marker. */
async function discardHalfBuilt(cacheDir: string, hash: string, entry: string, log: Logger): Promise<void> {
  for (const name of await fs.readdir(cacheDir)) {
    if (name.startsWith(`${hash}.tmp-`)) {
      log.warn({ dir: name }, 'discarding half-built image');
      await fs.rm(path.join(cacheDir, name), { recursive: true, force: true });
    }
  }
  if (existsSync(entry) && !existsSync(path.join(entry, 'ready'))) {
    log.warn({ dir: entry }, 'discarding image without ready marker');
    await fs.rm(entry, { recursive: true, force: true });
  }
}

function mmdebstrap(recipe: ImageRecipe, target: string, onLine: (l: string) => void): Promise<void> {
  const args = [
    `--variant=${recipe.variant}`,
    `--include=${recipe.packages.join(',')}`,
    '--mode=root',
    '--format=directory',
    recipe.suite,
    target,
    ...recipe.mirrors,
  ];
  return new Promise((resolve, reject) => {
    const child = spawn(recipe.tool, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const tail: string[] = [];
    let buf = '';
    const onData = (d: Buffer) => {
      buf += d.toString('utf8');
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).trimEnd();
        buf = buf.slice(i + 1);
        if (!line) continue;
        tail.push(line);
        if (tail.length > 20) tail.shift();
        onLine(line);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', (e) =>
      reject(new Error(`cannot run ${recipe.tool} (apt-get install -y mmdebstrap): ${e.message}`)),
    );
    child.on('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`${recipe.tool} failed (exit ${code}):\n${tail.join('\n')}`)),
    );
  });
}
