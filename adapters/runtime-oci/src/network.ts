import { createHash } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import type { Logger } from '@roost/core';
import { BRIDGE, GATEWAY, SUBNET_BITS, SUBNET_PREFIX } from './constants.js';
import { mustRun, runCmd } from './proc.js';

/** Host-side veth name: derived from the id so reconciliation can find it; IFNAMSIZ is 16. */
export function vethName(id: string): string {
  return `rv${createHash('sha256').update(id).digest('hex').slice(0, 12)}`;
}

/** Host numbers 1..65534 of 10.213.0.0/16, as an address. */
function addressOf(n: number): string {
  return `${SUBNET_PREFIX}.${n >> 8}.${n & 255}`;
}
const HOSTS = 2 ** (32 - SUBNET_BITS) - 2;

/**
 * Hands out sandbox addresses: start at a hash of the id, probe linearly past ones in use.
 * In-memory, re-seeded from the bundles' saved addresses when the runtime starts.
 */
export class AddressPool {
  private used = new Set<string>([GATEWAY]);

  take(id: string): string {
    const start = createHash('sha256').update(id).digest().readUInt32BE(0) % HOSTS;
    for (let i = 0; i < HOSTS; i++) {
      const a = addressOf(((start + i) % HOSTS) + 1);
      if (!this.used.has(a)) {
        this.used.add(a);
        return a;
      }
    }
    throw new Error(`no free address left in ${SUBNET_PREFIX}.0.0/${SUBNET_BITS}`);
  }
  reserve(addr: string): void {
    this.used.add(addr);
  }
  release(addr: string): void {
    this.used.delete(addr);
  }
}

/**
 * Creates the bridge once. No address on it, so a sandbox has no route to any host
 * service; addrgenmode none also keeps IPv6 link-local addresses off it, which would
 * otherwise make host services listening on [::] reachable over fe80::.
 */
export async function ensureBridge(log: Logger): Promise<void> {
  if (existsSync(`/sys/class/net/${BRIDGE}`)) return;
  const r = await runCmd('ip', ['-batch', '-'], [
    `link add ${BRIDGE} type bridge`,
    `link set dev ${BRIDGE} addrgenmode none`,
    `link set dev ${BRIDGE} up`,
  ].join('\n'));
  if (r.code !== 0 && !existsSync(`/sys/class/net/${BRIDGE}`)) {
    throw new Error(`cannot create bridge ${BRIDGE}: ${r.stderr.trim()}`);
  }
  log.warn(
    { change: `ip link add ${BRIDGE} type bridge (no address, IPv6 off)`, undo: `ip link del ${BRIDGE}` },
    `host-global change: created bridge ${BRIDGE} for sandbox networking`,
  );
}

/**
 * Gives the sandbox whose init is `pid` an eth0 with `addr`, on an isolated bridge port
 * (isolated ports cannot reach each other, only the bridge, which has no address). No default route.
 * Two `ip -batch` runs: one on the host, one inside the netns.
 */
export async function attachSandbox(id: string, pid: number, addr: string, nat: boolean): Promise<string> {
  const veth = vethName(id);
  await mustRun('ip', ['-batch', '-'], [
    `link add ${veth} type veth peer name eth0 netns /proc/${pid}/ns/net`,
    `link set dev ${veth} alias roost:${id}`,
    `link set dev ${veth} addrgenmode none`,
    `link set dev ${veth} master ${BRIDGE}`,
    `link set dev ${veth} type bridge_slave isolated on`,
    `link set dev ${veth} up`,
  ].join('\n'));
  await mustRun('nsenter', [`--net=/proc/${pid}/ns/net`, 'ip', '-batch', '-'], [
    'link set dev lo up',
    `addr add ${addr}/${SUBNET_BITS} dev eth0`,
    'link set dev eth0 up',
    ...(nat ? [`route add default via ${GATEWAY}`] : []),
  ].join('\n'));
  return veth;
}

/** Gives a running sandbox (made without) its default route through the gateway. */
export async function addDefaultRoute(pid: number): Promise<void> {
  await mustRun('nsenter', [`--net=/proc/${pid}/ns/net`, 'ip', 'route', 'replace', 'default', 'via', GATEWAY]);
}

/** What a sandbox's /etc/resolv.conf says: the gateway's forwarder, or why there is none. */
export function resolvConf(nat: boolean): string {
  return nat ? `nameserver ${GATEWAY}\n` : '# no network: this sandbox was made with --network none\n';
}

/** Deleting one end deletes the pair at once; left to the netns teardown it lags by 1–2 s. */
export async function detachSandbox(id: string): Promise<void> {
  const veth = vethName(id);
  if (!existsSync(`/sys/class/net/${veth}`)) return;
  const r = await runCmd('ip', ['link', 'del', veth]);
  if (r.code !== 0 && existsSync(`/sys/class/net/${veth}`)) {
    throw new Error(`cannot delete ${veth}: ${r.stderr.trim()}`);
  }
}

export async function readSavedAddress(file: string): Promise<string | undefined> {
  return (await fs.readFile(file, 'utf8').catch(() => '')).trim() || undefined;
}
