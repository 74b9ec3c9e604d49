// Which roostd this is, among several on one host. Every host-global name the driver makes (the
// bridge, its subnet, the nft table, the cgroup parent, veth names and aliases) is scoped to the
// instance, so a test daemon beside the real one never touches the real one's sandboxes.
//
// The instance is fixed the first time a state dir is used and kept in `<stateDir>/instance.json`.
// `default` keeps the names every roostd used before instances existed (bridge roost0,
// 10.213.0.0/16, nft table `inet roost`, cgroup parent `roost`), so an upgraded host adopts its
// running sandboxes. Any other instance gets `roost-<name>` names, its own subnet and its own
// region of host id ranges (id-ranges.ts).
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, promises as fs } from 'node:fs';
import path from 'node:path';
import type { Logger } from '@roost/core';
import { idRegion, INSTANCE_REGIONS, lowestFreeRegion, type IdRegion } from './id-ranges.js';
import { runCmd } from './proc.js';

export const DEFAULT_INSTANCE = 'default';
const NAME_RE = /^[a-z0-9]{1,8}$/;
const DEFAULT_SUBNET = '10.213.0.0/16';
/** Where instances without a configured subnet get theirs: /20s (4,094 sandboxes) of 10.214–10.223. */
const AUTO_SUBNET_BASE = ipToInt('10.214.0.0');
const AUTO_SUBNET_BITS = 20;
const AUTO_SUBNET_SLOTS = (10 * 65_536) / 2 ** (32 - AUTO_SUBNET_BITS);
/** What the bridge's alias starts with: it says which instance, state dir and subnet own it. */
const BRIDGE_ALIAS_PREFIX = 'roost-net';

export function ipToInt(address: string): number {
  const parts = address.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) throw new Error(`not an IPv4 address: ${address}`);
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** An IPv4 range; `first`..`last` as unsigned ints. */
export interface Cidr {
  first: number;
  last: number;
  bits: number;
  text: string;
}

/** "10.1.0.0/16" or "10.1.2.3" (/32); the address must be the first of its range. */
export function parseCidr(text: string): Cidr {
  const [address, bitsText] = text.split('/');
  const bits = bitsText === undefined ? 32 : Number(bitsText);
  if (!Number.isInteger(bits) || bits < 0 || bits > 32 || (bitsText !== undefined && !/^\d+$/.test(bitsText))) throw new Error(`not an IPv4 CIDR: ${text}`);
  const first = ipToInt(address!);
  const size = 2 ** (32 - bits);
  if (first % size !== 0) throw new Error(`${text} is not the start of a /${bits} (did you mean ${intToIp(first - (first % size))}/${bits}?)`);
  return { first, last: first + size - 1, bits, text: `${address}/${bits}` };
}

export function overlaps(a: Cidr, b: Cidr): boolean {
  return a.first <= b.last && b.first <= a.last;
}

/** The sandbox subnet of an instance: the bridge's gateway is the first host, sandboxes the rest. */
export interface Subnet extends Cidr {
  gateway: string;
  /** Host numbers 1..hosts are usable (the gateway is number 1). */
  hosts: number;
}

export function subnetOf(text: string): Subnet {
  const cidr = parseCidr(text);
  if (cidr.bits < 8 || cidr.bits > 28) throw new Error(`sandbox subnet ${text}: use a prefix length between /8 and /28`);
  return { ...cidr, gateway: intToIp(cidr.first + 1), hosts: cidr.last - cidr.first - 1 };
}

export interface Instance {
  /** `default`, or up to 8 of [a-z0-9]. */
  name: string;
  stateDir: string;
  bridge: string;
  /** `inet <nftTable>` */
  nftTable: string;
  /** Parent cgroup of every sandbox, in every hierarchy. */
  cgroupParent: string;
  /** A host veth's alias is this plus the sandbox id; doctor finds its own veths by it. */
  vethAliasPrefix: string;
  subnet: Subnet;
  /** Which host id ranges its sandboxes get: `default` 0..16383, others a region of 512. */
  idRegion: IdRegion;
}

interface SavedInstance {
  name: string;
  subnet: string;
  /** Region number; absent for `default`. */
  idRegion?: number;
}

function namesOf(name: string, stateDir: string, subnet: Subnet, region?: number): Instance {
  const scoped = name === DEFAULT_INSTANCE ? 'roost' : `roost-${name}`;
  return {
    name,
    stateDir,
    bridge: name === DEFAULT_INSTANCE ? 'roost0' : scoped,
    nftTable: scoped,
    cgroupParent: scoped,
    vethAliasPrefix: name === DEFAULT_INSTANCE ? 'roost:' : `roost@${name}:`,
    subnet,
    idRegion: idRegion(region),
  };
}

/** Host-side veth name: derived from instance and id so reconciliation can find it; IFNAMSIZ is 16. */
export function vethName(instance: Pick<Instance, 'name'>, id: string): string {
  const key = instance.name === DEFAULT_INSTANCE ? id : `${instance.name}/${id}`;
  return `rv${createHash('sha256').update(key).digest('hex').slice(0, 12)}`;
}

function instanceFile(stateDir: string): string {
  return path.join(stateDir, 'instance.json');
}

/** The instance a state dir belongs to, for tests and tools that look at a state dir (no checks). */
export function readInstance(stateDir: string): Instance {
  const saved = JSON.parse(readFileSync(instanceFile(stateDir), 'utf8')) as SavedInstance;
  return namesOf(saved.name, stateDir, subnetOf(saved.subnet), saved.idRegion);
}

/** A name for a fresh state dir: stable for that dir, distinct between dirs. */
export function derivedInstanceName(stateDir: string): string {
  return `i${createHash('sha256').update(path.resolve(stateDir)).digest('hex').slice(0, 7)}`;
}

export interface InstanceOpts {
  /** ROOST_INSTANCE; undefined: what the state dir says, else derived from its path. */
  name?: string;
  /** ROOST_SUBNET; undefined: what the state dir says, else 10.213.0.0/16 for `default`, else a free /20 of 10.214–10.223. */
  subnet?: string;
  logger: Logger;
}

interface ClaimedBridge {
  bridge: string;
  name: string;
  stateDir: string;
  subnet: Cidr;
  /** Its host id region; undefined for `default` (and for a roostd from before regions). */
  idRegion?: number;
}

/** Bridges of every roostd on this host, from their aliases (`roost-net <name> <subnet> [ids:<region>] <stateDir>`). */
async function claimedBridges(): Promise<ClaimedBridge[]> {
  const claimed: ClaimedBridge[] = [];
  for (const link of await fs.readdir('/sys/class/net').catch(() => [] as string[])) {
    const alias = (await fs.readFile(`/sys/class/net/${link}/ifalias`, 'utf8').catch(() => '')).trim();
    // The state dir is absolute, so it never looks like the region's `ids:<n>`.
    const match = new RegExp(`^${BRIDGE_ALIAS_PREFIX} (\\S+) (\\S+) (?:ids:(\\d+) )?(.+)$`).exec(alias);
    if (!match) continue;
    try {
      claimed.push({ bridge: link, name: match[1]!, subnet: parseCidr(match[2]!), idRegion: match[3] === undefined ? undefined : Number(match[3]), stateDir: match[4]! });
    } catch {
      // not ours after all
    }
  }
  // A bridge roost0 from before instances had no alias: it is the default instance's.
  if (existsSync('/sys/class/net/roost0') && !claimed.some((c) => c.bridge === 'roost0')) {
    claimed.push({ bridge: 'roost0', name: DEFAULT_INSTANCE, subnet: parseCidr(DEFAULT_SUBNET), stateDir: '' });
  }
  return claimed;
}

/** IPv4 destinations the host routes somewhere (every table), except through `ownBridge`. */
async function routedRanges(ownBridge: string): Promise<Array<{ cidr: Cidr; route: string }>> {
  const r = await runCmd('ip', ['-4', '-o', 'route', 'show', 'table', 'all']);
  const ranges: Array<{ cidr: Cidr; route: string }> = [];
  for (const line of r.stdout.split('\n')) {
    const words = line.trim().split(/\s+/);
    if (words.length < 2 || words.includes(ownBridge)) continue;
    const dest = ['local', 'broadcast', 'unicast', 'anycast', 'multicast', 'blackhole', 'unreachable', 'prohibit', 'throw', 'nat'].includes(words[0]!) ? words[1]! : words[0]!;
    if (dest === 'default') continue;
    try {
      ranges.push({ cidr: parseCidr(dest.includes('/') ? dest : `${dest}/32`), route: line.trim() });
    } catch {
      // a destination we do not parse (e.g. with host bits set) cannot be ours to judge
    }
  }
  return ranges;
}

/** Why `subnet` cannot be this instance's, or undefined when it is free. */
async function subnetConflict(subnet: Cidr, name: string, bridge: string): Promise<string | undefined> {
  for (const other of await claimedBridges()) {
    if (other.bridge === bridge) continue;
    if (overlaps(subnet, other.subnet)) {
      return `overlaps ${other.subnet.text} of bridge ${other.bridge} (roostd instance ${other.name}${other.stateDir ? `, state dir ${other.stateDir}` : ''})`;
    }
  }
  // The default instance's subnet is kept free even before its bridge exists.
  if (name !== DEFAULT_INSTANCE && overlaps(subnet, parseCidr(DEFAULT_SUBNET))) return `overlaps ${DEFAULT_SUBNET}, kept for the default roostd instance`;
  for (const { cidr, route } of await routedRanges(bridge)) {
    if (overlaps(subnet, cidr)) return `overlaps the host's route "${route}"`;
  }
  return undefined;
}

async function pickSubnet(name: string, bridge: string, skip: Set<number>): Promise<string> {
  const start = createHash('sha256').update(name).digest().readUInt32BE(0) % AUTO_SUBNET_SLOTS;
  for (let i = 0; i < AUTO_SUBNET_SLOTS; i++) {
    const slot = (start + i) % AUTO_SUBNET_SLOTS;
    if (skip.has(slot)) continue;
    const text = `${intToIp(AUTO_SUBNET_BASE + slot * 2 ** (32 - AUTO_SUBNET_BITS))}/${AUTO_SUBNET_BITS}`;
    if (!(await subnetConflict(parseCidr(text), name, bridge))) return text;
  }
  throw new Error('no free sandbox subnet left in 10.214.0.0–10.223.255.255; set ROOST_SUBNET');
}

/**
 * The host id region of a non-default instance: `current` (kept across restarts) while no other
 * live instance holds it, else the lowest free one. Instances are found by their bridges' aliases.
 * One with sandboxes cannot move: their files are owned by ids of its region.
 */
async function pickRegion(name: string, bridge: string, stateDir: string, current: number | undefined, skipped: ReadonlySet<number>): Promise<number> {
  const holders = new Map<number, ClaimedBridge>();
  for (const c of await claimedBridges()) if (c.bridge !== bridge && c.idRegion !== undefined) holders.set(c.idRegion, c);
  const taken = new Set([...skipped, ...holders.keys()]);
  if (current !== undefined && !taken.has(current)) return current;
  if (current !== undefined && sandboxesExist(stateDir)) {
    const holder = holders.get(current);
    throw new Error(
      `host id region ${current} of roostd instance "${name}" is held by ${holder ? `instance "${holder.name}" (state dir ${holder.stateDir})` : 'an instance that started at the same moment'}, and this one's sandboxes use it: stop that roostd, start this one, then start that one again (it moves to a free region if it holds no sandbox)`,
    );
  }
  const free = lowestFreeRegion(taken);
  if (free === undefined) throw new Error(`no free host id region left for roostd instance "${name}" (${INSTANCE_REGIONS} per host): stop a roostd instance no longer needed`);
  return free;
}

/** How long an instance waits for a rival that picked its region at the same moment to move. */
const RIVAL_MOVE_MS = 2_000;

/** Whether the instance of `rivalBridge` relabels it with another region within RIVAL_MOVE_MS. */
async function movedAway(rivalBridge: string, region: number): Promise<boolean> {
  const deadline = Date.now() + RIVAL_MOVE_MS;
  for (;;) {
    const rival = (await claimedBridges()).find((c) => c.bridge === rivalBridge);
    if (rival?.idRegion !== region) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function sandboxesExist(stateDir: string): boolean {
  for (const dir of ['sandboxes', 'oci-state']) {
    if (readdirSafe(path.join(stateDir, dir)).some((e) => !e.startsWith('roost-probe-'))) return true;
  }
  return false;
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/**
 * Decides (first start) or re-reads the instance of `stateDir`, checks that its bridge and
 * subnet are its own on this host, creates its bridge, and claims both in the bridge's alias.
 * Throws one clear message on a collision.
 */
export async function openInstance(stateDir: string, opts: InstanceOpts): Promise<Instance> {
  if (opts.name !== undefined && opts.name !== DEFAULT_INSTANCE && !NAME_RE.test(opts.name)) {
    throw new Error(`instance name "${opts.name}": use up to 8 lowercase letters and digits, or "default"`);
  }
  if (opts.subnet !== undefined) subnetOf(opts.subnet);
  await fs.mkdir(stateDir, { recursive: true, mode: 0o711 });
  const file = instanceFile(stateDir);
  const saved = await fs.readFile(file, 'utf8').then((t) => JSON.parse(t) as SavedInstance, () => undefined);
  let name: string;
  let subnetText: string | undefined;
  if (saved) {
    if (opts.name !== undefined && opts.name !== saved.name) {
      throw new Error(`the state dir ${stateDir} belongs to roostd instance "${saved.name}", not "${opts.name}": unset ROOST_INSTANCE or use another data dir`);
    }
    name = saved.name;
    subnetText = saved.subnet;
    if (opts.subnet !== undefined && parseCidr(opts.subnet).text !== parseCidr(saved.subnet).text) {
      if (sandboxesExist(stateDir)) {
        throw new Error(`sandboxes of this roostd use subnet ${saved.subnet}; remove them (roost rm) before moving to ${opts.subnet}, or unset ROOST_SUBNET`);
      }
      subnetText = opts.subnet;
    }
  } else {
    // A state dir an older roostd used (it made sandboxes/ at every start) keeps the old names,
    // so the sandboxes running in it are adopted.
    const usedBefore = existsSync(path.join(stateDir, 'sandboxes'));
    name = opts.name ?? (usedBefore ? DEFAULT_INSTANCE : derivedInstanceName(stateDir));
    subnetText = opts.subnet ?? (name === DEFAULT_INSTANCE ? DEFAULT_SUBNET : undefined);
  }
  const bridge = namesOf(name, stateDir, subnetOf(DEFAULT_SUBNET)).bridge;
  const owner = (await claimedBridges()).find((c) => c.bridge === bridge);
  if (owner?.stateDir && path.resolve(owner.stateDir) !== path.resolve(stateDir) && existsSync(owner.stateDir)) {
    throw new Error(
      `bridge ${bridge} belongs to the roostd with state dir ${owner.stateDir} (instance "${name}"); give this one another instance (ROOST_INSTANCE) or data dir`,
    );
  }
  const autoPicked = subnetText === undefined;
  const skipped = new Set<number>();
  let region = name === DEFAULT_INSTANCE ? undefined : saved?.idRegion;
  const skippedRegions = new Set<number>();
  for (;;) {
    subnetText ??= await pickSubnet(name, bridge, skipped);
    const conflict = await subnetConflict(parseCidr(subnetText), name, bridge);
    if (conflict) {
      throw new Error(`sandbox subnet ${subnetText} of roostd instance "${name}" ${conflict}: set ROOST_SUBNET (config network.subnet) to a free range`);
    }
    if (name !== DEFAULT_INSTANCE) region = await pickRegion(name, bridge, stateDir, region, skippedRegions);
    await claimBridge(bridge, name, subnetText, region, stateDir, opts.logger);
    // Two daemons that picked at the same moment may have picked the same range or region: the
    // instance whose name sorts first keeps it, the other picks again.
    const others = (await claimedBridges()).filter((c) => c.bridge !== bridge);
    const subnetTaken = autoPicked && others.some((c) => c.name < name && overlaps(c.subnet, parseCidr(subnetText!)));
    let regionTaken = false;
    for (const rival of others.filter((c) => region !== undefined && c.idRegion === region)) {
      // A rival that read the aliases before this one labelled its bridge saw no clash and keeps
      // the region whatever the names: sharing host ids is what regions prevent, so this one
      // keeps it only once the rival has moved.
      if (rival.name < name || !(await movedAway(rival.bridge, region!))) {
        regionTaken = true;
        break;
      }
    }
    if (!subnetTaken && !regionTaken) break;
    if (subnetTaken) {
      skipped.add((parseCidr(subnetText).first - AUTO_SUBNET_BASE) / 2 ** (32 - AUTO_SUBNET_BITS));
      subnetText = undefined;
    }
    if (regionTaken) skippedRegions.add(region!);
  }
  const instance = namesOf(name, stateDir, subnetOf(subnetText), region);
  await fs.writeFile(file, JSON.stringify({ name, subnet: subnetText, idRegion: region } satisfies SavedInstance));
  opts.logger.info(
    { instance: name, bridge, subnet: subnetText, nftTable: instance.nftTable, cgroupParent: instance.cgroupParent, idRegion: region ?? DEFAULT_INSTANCE },
    'roostd instance',
  );
  return instance;
}

/**
 * Creates the bridge once, and (re)writes its alias. No address on it, so a sandbox has no
 * route to any host service; addrgenmode none also keeps IPv6 link-local addresses off it,
 * which would otherwise make host services listening on [::] reachable over fe80::.
 */
async function claimBridge(bridge: string, name: string, subnet: string, region: number | undefined, stateDir: string, log: Logger): Promise<void> {
  if (!existsSync(`/sys/class/net/${bridge}`)) {
    const r = await runCmd('ip', ['-batch', '-'], [
      `link add ${bridge} type bridge`,
      `link set dev ${bridge} addrgenmode none`,
      `link set dev ${bridge} up`,
    ].join('\n'));
    if (r.code !== 0 && !existsSync(`/sys/class/net/${bridge}`)) {
      throw new Error(`cannot create bridge ${bridge}: ${r.stderr.trim()}`);
    }
    log.warn(
      { change: `ip link add ${bridge} type bridge (no address, IPv6 off)`, undo: `ip link del ${bridge}` },
      `host-global change: created bridge ${bridge} for sandbox networking`,
    );
  }
  const alias = `${BRIDGE_ALIAS_PREFIX} ${name} ${subnet}${region === undefined ? '' : ` ids:${region}`} ${path.resolve(stateDir)}`;
  const current = (await fs.readFile(`/sys/class/net/${bridge}/ifalias`, 'utf8').catch(() => '')).trim();
  if (current !== alias) {
    const r = await runCmd('ip', ['link', 'set', 'dev', bridge, 'alias', alias]);
    if (r.code !== 0) throw new Error(`cannot label bridge ${bridge}: ${r.stderr.trim()}`);
  }
}

/**
 * Removes what an instance other than `default` made on the host (nft table, bridge, cgroup
 * parents), when it holds no sandbox: a test daemon on a temp data dir leaves nothing behind.
 * The default instance keeps them for its next start, as roostd always did.
 */
export async function removeIdleInstance(instance: Instance, log: Logger): Promise<void> {
  if (instance.name === DEFAULT_INSTANCE) return;
  const table = await runCmd('nft', ['delete', 'table', 'inet', instance.nftTable]);
  if (table.code === 0) log.warn({ undone: `nft table inet ${instance.nftTable}` }, 'host-global change undone: instance firewall removed (no sandbox left)');
  if (existsSync(`/sys/class/net/${instance.bridge}`)) {
    const r = await runCmd('ip', ['link', 'del', instance.bridge]);
    if (r.code === 0) log.warn({ undone: `bridge ${instance.bridge}` }, 'host-global change undone: instance bridge removed (no sandbox left)');
  }
  const cgroupRoot = '/sys/fs/cgroup';
  for (const hierarchy of ['', ...(await fs.readdir(cgroupRoot).catch(() => [] as string[]))]) {
    await fs.rmdir(path.join(cgroupRoot, hierarchy, instance.cgroupParent)).catch(() => {});
  }
}
