// Each sandbox's own host uid/gid range: the image stays on disk shifted to SHIFT_BASE (built
// once, shared), and every sandbox sees it through an idmapped mount that moves SHIFT_BASE+k to
// its own base+k (native/roost-idmap.c). See docs/runtime-oci.md, "Host id ranges".
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { RoostError } from '@roost/core';
import { SHIFT_BASE, SHIFT_SIZE } from './constants.js';
import { unmountAll } from './overlay.js';
import { runCmd } from './proc.js';

/**
 * Host id of root in the sandbox holding range 0. Above SHIFT_BASE's range (1000000..1065535,
 * the image's on-disk owners and the shared range of the fallback) and far above the ids
 * useradd gives people and services; overlaps with /etc/subuid-style grants are checked.
 */
export const ID_RANGES_BASE = 2_000_000;
/** Ranges stop below 2^31: some tools still read uids as signed 32-bit numbers. */
export const MAX_ID_RANGES = Math.floor((2 ** 31 - ID_RANGES_BASE) / SHIFT_SIZE);

/** Host uid/gid of root in the sandbox that holds `idRange`. */
export function hostIdBase(idRange: number): number {
  if (!Number.isInteger(idRange) || idRange < 0 || idRange >= MAX_ID_RANGES) {
    throw new Error(`host id range ${idRange} is out of bounds (0..${MAX_ID_RANGES - 1})`);
  }
  return ID_RANGES_BASE + idRange * SHIFT_SIZE;
}

// Regions: several roostd on one host each allocate indexes 0, 1, … in their own store, so each
// instance maps its store's index k into a region of indexes no other instance holds.

/** Indexes 0..16383 belong to the `default` instance: the ids every sandbox had before regions. */
export const DEFAULT_REGION_SIZE = 16_384;
/** Indexes per other instance (a test daemon, a second roostd): region r starts at 16384 + r × 512. */
export const INSTANCE_REGION_SIZE = 512;
/** Regions for instances other than `default` on one host (31). */
export const INSTANCE_REGIONS = Math.floor((MAX_ID_RANGES - DEFAULT_REGION_SIZE) / INSTANCE_REGION_SIZE);

/** The indexes an instance maps its sandboxes to: `first`..`first + size - 1`. */
export interface IdRegion {
  /** Region number of a non-default instance; undefined for `default`. */
  number?: number;
  first: number;
  size: number;
}

/** Region `number` of a non-default instance, or the default instance's (undefined). */
export function idRegion(number?: number): IdRegion {
  if (number === undefined) return { first: 0, size: DEFAULT_REGION_SIZE };
  if (!Number.isInteger(number) || number < 0 || number >= INSTANCE_REGIONS) {
    throw new Error(`host id region ${number} is out of bounds (0..${INSTANCE_REGIONS - 1})`);
  }
  return { number, first: DEFAULT_REGION_SIZE + number * INSTANCE_REGION_SIZE, size: INSTANCE_REGION_SIZE };
}

/** The lowest region not in `taken`, or undefined when every one is. */
export function lowestFreeRegion(taken: ReadonlySet<number>): number | undefined {
  for (let r = 0; r < INSTANCE_REGIONS; r++) if (!taken.has(r)) return r;
  return undefined;
}

/**
 * Host uid/gid of root in the sandbox holding the store's index `idRange` in `region`. An index
 * past the region is refused: it would be another instance's (or past 2^31).
 */
export function hostIdBaseIn(region: IdRegion, idRange: number): number {
  if (Number.isInteger(idRange) && idRange >= region.size) {
    throw new RoostError(
      'TOO_MANY_SANDBOXES',
      `this roostd holds ${region.size} sandboxes and warm-pool members already, as many as its host id region gives (${region.size} ranges of ${SHIFT_SIZE} ids)`,
    );
  }
  if (!Number.isInteger(idRange) || idRange < 0) throw new Error(`host id range ${idRange} is out of bounds (0..${region.size - 1})`);
  return hostIdBase(region.first + idRange);
}

/** Host ids some account of the host owns, at or above ID_RANGES_BASE. */
export interface HostIdClaim {
  first: number;
  /** Exclusive. */
  end: number;
  /** e.g. "/etc/subuid: alice" */
  what: string;
}

/**
 * The host's users, groups and subordinate id grants (rootless podman, LXC) that fall where
 * sandboxes' ranges are: a sandbox given one of those ids would own that account's files.
 */
export async function hostIdClaims(etcDir = '/etc'): Promise<HostIdClaim[]> {
  const claims: HostIdClaim[] = [];
  const read = (file: string) => fs.readFile(path.join(etcDir, file), 'utf8').catch(() => '');
  const [passwd, group, subuid, subgid] = await Promise.all(['passwd', 'group', 'subuid', 'subgid'].map(read));
  for (const [file, text, idField] of [['passwd', passwd, 2], ['group', group, 2]] as const) {
    for (const line of text.split('\n')) {
      const fields = line.split(':');
      const id = Number(fields[idField]);
      if (Number.isInteger(id) && id >= ID_RANGES_BASE) claims.push({ first: id, end: id + 1, what: `/etc/${file}: ${fields[0]}` });
    }
  }
  for (const [file, text] of [['subuid', subuid], ['subgid', subgid]] as const) {
    for (const line of text.split('\n')) {
      const [name, start, count] = line.split(':');
      const first = Number(start);
      const end = first + Number(count);
      if (Number.isInteger(first) && Number.isInteger(end) && end > ID_RANGES_BASE) claims.push({ first, end, what: `/etc/${file}: ${name}` });
    }
  }
  return claims;
}

/** The claim a sandbox with root at host id `base` would trespass on, if any. */
export function overlappingClaim(base: number, claims: HostIdClaim[]): HostIdClaim | undefined {
  return claims.find((c) => c.first < base + SHIFT_SIZE && base < c.end);
}

export type IdmappedOverlay = {
  /** The image's rootfs (on-disk owners SHIFT_BASE+k). */
  lower: string;
  /** An empty dir where the idmapped view of `lower` is attached while the overlay is mounted. */
  staging: string;
  target: string;
  /** Host id that the image's SHIFT_BASE (root) becomes. */
  hostBase: number;
} & (
  | { upper: string; work: string; workspace?: undefined }
  | {
    upper?: undefined;
    work?: undefined;
    /**
     * A workspace (Workspaces.open): its upper/ and work/, owned by the canonical ids like the
     * image, are seen through an idmapped mount too (plus host root as itself, for overlayfs's
     * own work); its lowers, topmost first, are stacked above the image. Each staging is an
     * empty dir, as `staging` is.
     */
    workspace: { dir: string; staging: string; lowers: Array<{ dir: string; staging: string }> };
  }
);

/** Mounts the overlay with the image (and a workspace, if any) seen through idmapped mounts (~2 ms, one helper run). */
export async function mountIdmappedOverlay(helper: string, o: IdmappedOverlay): Promise<void> {
  const layers = o.workspace
    ? ['--ws', o.workspace.dir, '--ws-staging', o.workspace.staging, ...o.workspace.lowers.flatMap((l) => ['--ws-lower', l.dir, '--ws-lower-staging', l.staging])]
    : ['--upper', o.upper, '--work', o.work];
  const r = await runCmd(helper, [
    'overlay', '--lower', o.lower, '--staging', o.staging, ...layers,
    '--from', String(SHIFT_BASE), '--to', String(o.hostBase), '--count', String(SHIFT_SIZE), o.target,
  ]);
  if (r.code !== 0) throw new Error(r.stderr.trim() || `${path.basename(helper)} exited ${r.code}`);
}

const PROBE_DIR_PREFIX = 'idmap-probe-';

/**
 * Whether idmapped image layers work here, tried once at start-up the way sandboxes use them:
 * an overlay over an idmapped dir whose file must show the mapped owner, and a write through
 * it (a copy-up of that file) that must land in the upper dir with that owner. `hostBase` is
 * the instance's first range, so the probe never uses another instance's ids. Returns why not,
 * or undefined when they work.
 */
export async function probeIdmappedOverlay(helper: string, scratchDir: string, hostBase: number): Promise<string | undefined> {
  if (!existsSync(helper)) return `the helper ${helper} is not built (make -C adapters/runtime-oci/native)`;
  let dir: string;
  try {
    // What a probe cut short by a crash left (unmounted first: rm must not reach through a mount).
    for (const entry of await fs.readdir(scratchDir)) {
      if (!entry.startsWith(PROBE_DIR_PREFIX)) continue;
      await unmountAll(path.join(scratchDir, entry));
      await fs.rm(path.join(scratchDir, entry), { recursive: true, force: true });
    }
    dir = await fs.mkdtemp(path.join(scratchDir, PROBE_DIR_PREFIX));
  } catch (error) {
    return `cannot prepare the probe in ${scratchDir}: ${(error as Error).message}`;
  }
  const d = (name: string) => path.join(dir, name);
  try {
    for (const name of ['lower', 'staging', 'upper', 'work', 'rootfs']) await fs.mkdir(d(name));
    await fs.writeFile(d('lower/file'), 'probe');
    await fs.lchown(d('lower'), SHIFT_BASE, SHIFT_BASE);
    await fs.lchown(d('lower/file'), SHIFT_BASE + 7, SHIFT_BASE + 7);
    await fs.chown(d('upper'), hostBase, hostBase);
    await mountIdmappedOverlay(helper, { lower: d('lower'), staging: d('staging'), upper: d('upper'), work: d('work'), target: d('rootfs'), hostBase });
    try {
      const seen = await fs.stat(d('rootfs/file'));
      if (seen.uid !== hostBase + 7) return `an idmapped image layer showed owner ${seen.uid}, not ${hostBase + 7}`;
      await fs.appendFile(d('rootfs/file'), ' copied up');
      const copied = await fs.stat(d('upper/file'));
      if (copied.uid !== hostBase + 7) return `a copied-up file got owner ${copied.uid}, not ${hostBase + 7}`;
    } finally {
      await unmountAll(dir);
    }
    return undefined;
  } catch (error) {
    return (error as Error).message;
  } finally {
    // A scratch dir the next start clears anyway: its removal failing decides nothing.
    await fs.rm(dir, { recursive: true, force: true }).catch(() => {});
  }
}
