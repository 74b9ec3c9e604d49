import { createHash } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import { intToIp, vethName, type Instance, type Subnet } from './instance.js';
import { mustRun, runCmd } from './proc.js';

/**
 * Hands out sandbox addresses of the instance's subnet: start at a hash of the id, probe
 * linearly past ones in use. In-memory, re-seeded from the bundles' saved addresses when the
 * runtime starts.
 */
export class AddressPool {
  private readonly used: Set<string>;

  constructor(private readonly subnet: Subnet) {
    this.used = new Set([subnet.gateway]);
  }

  take(id: string): string {
    const { hosts, first } = this.subnet;
    const start = createHash('sha256').update(id).digest().readUInt32BE(0) % hosts;
    for (let i = 0; i < hosts; i++) {
      const a = intToIp(first + ((start + i) % hosts) + 1);
      if (!this.used.has(a)) {
        this.used.add(a);
        return a;
      }
    }
    throw new Error(`no free address left in ${this.subnet.text}`);
  }
  reserve(addr: string): void {
    this.used.add(addr);
  }
  release(addr: string): void {
    this.used.delete(addr);
  }
}

/**
 * Gives the sandbox whose init is `pid` an eth0 with `addr`, on an isolated port of the
 * instance's bridge (isolated ports cannot reach each other, only the bridge, which has no
 * address). No default route. Two `ip -batch` runs: one on the host, one inside the netns.
 */
export async function attachSandbox(instance: Instance, id: string, pid: number, addr: string, nat: boolean): Promise<string> {
  const veth = vethName(instance, id);
  await mustRun('ip', ['-batch', '-'], [
    `link add ${veth} type veth peer name eth0 netns /proc/${pid}/ns/net`,
    `link set dev ${veth} alias ${instance.vethAliasPrefix}${id}`,
    `link set dev ${veth} addrgenmode none`,
    `link set dev ${veth} master ${instance.bridge}`,
    `link set dev ${veth} type bridge_slave isolated on`,
    `link set dev ${veth} up`,
  ].join('\n'));
  await mustRun('nsenter', [`--net=/proc/${pid}/ns/net`, 'ip', '-batch', '-'], [
    'link set dev lo up',
    `addr add ${addr}/${instance.subnet.bits} dev eth0`,
    'link set dev eth0 up',
    ...(nat ? [`route add default via ${instance.subnet.gateway}`] : []),
  ].join('\n'));
  return veth;
}

/** Gives a running sandbox (made without) its default route through the gateway. */
export async function addDefaultRoute(instance: Instance, pid: number): Promise<void> {
  await mustRun('nsenter', [`--net=/proc/${pid}/ns/net`, 'ip', 'route', 'replace', 'default', 'via', instance.subnet.gateway]);
}

/** What a sandbox's /etc/resolv.conf says: the gateway's forwarder, or why there is none. */
export function resolvConf(instance: Instance, nat: boolean): string {
  return nat ? `nameserver ${instance.subnet.gateway}\n` : '# no network: this sandbox was made with --network none\n';
}

/** Deleting one end deletes the pair at once; left to the netns teardown it lags by 1–2 s. */
export async function detachSandbox(instance: Instance, id: string): Promise<void> {
  const veth = vethName(instance, id);
  if (!existsSync(`/sys/class/net/${veth}`)) return;
  const r = await runCmd('ip', ['link', 'del', veth]);
  if (r.code !== 0 && existsSync(`/sys/class/net/${veth}`)) {
    throw new Error(`cannot delete ${veth}: ${r.stderr.trim()}`);
  }
}

export async function readSavedAddress(file: string): Promise<string | undefined> {
  return (await fs.readFile(file, 'utf8').catch(() => '')).trim() || undefined;
}
