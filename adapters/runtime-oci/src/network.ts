import { createHash } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import { NO_EGRESS_RULES } from '@roost/core';
import type {
  AttachedSandbox, EgressRules, Leftover, Network, NetworkAttachment, NetworkMode, NetworkSandbox,
} from '@roost/core';
import { Egress, NAT_SET, rulesChain, type EgressOpts } from './egress.js';
import { intToIp, vethName, type Instance, type Subnet } from './instance.js';
import { mustRun, runCmd } from './proc.js';

/**
 * Hands out sandbox addresses of the instance's subnet: start at a hash of the id, probe
 * linearly past ones in use. In-memory, re-seeded from the bundles' saved addresses when the
 * runtime starts.
 */
class AddressPool {
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
 * Gives the sandbox whose netns is `netnsPath` an eth0 with `addr`, on an isolated port of the
 * instance's bridge (isolated ports cannot reach each other, only the bridge, which has no
 * address). No default route. Two `ip -batch` runs: one on the host, one inside the netns.
 */
async function attachSandbox(instance: Instance, id: string, netnsPath: string, addr: string, nat: boolean): Promise<string> {
  const veth = vethName(instance, id);
  await mustRun('ip', ['-batch', '-'], [
    `link add ${veth} type veth peer name eth0 netns ${netnsPath}`,
    `link set dev ${veth} alias ${instance.vethAliasPrefix}${id}`,
    `link set dev ${veth} addrgenmode none`,
    `link set dev ${veth} master ${instance.bridge}`,
    `link set dev ${veth} type bridge_slave isolated on`,
    `link set dev ${veth} up`,
  ].join('\n'));
  await mustRun('nsenter', [`--net=${netnsPath}`, 'ip', '-batch', '-'], [
    'link set dev lo up',
    `addr add ${addr}/${instance.subnet.bits} dev eth0`,
    'link set dev eth0 up',
    ...(nat ? [`route add default via ${instance.subnet.gateway}`] : []),
  ].join('\n'));
  return veth;
}

/** Gives a running sandbox (made without) its default route through the gateway. */
async function addDefaultRoute(instance: Instance, netnsPath: string): Promise<void> {
  await mustRun('nsenter', [`--net=${netnsPath}`, 'ip', 'route', 'replace', 'default', 'via', instance.subnet.gateway]);
}

/** What a sandbox's /etc/resolv.conf says: the gateway's forwarder, or why there is none. */
function resolvConf(instance: Instance, nat: boolean): string {
  return nat ? `nameserver ${instance.subnet.gateway}\n` : '# no network: this sandbox was made with --network none\n';
}

/** Deleting one end deletes the pair at once; left to the netns teardown it lags by 1–2 s. */
async function detachSandbox(instance: Instance, id: string): Promise<void> {
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

/** One attached sandbox, as OciNetwork keeps it. */
interface Attached extends AttachedSandbox {
  egress: EgressRules;
}

const hasRules = (rules: EgressRules) => rules.allow.length > 0 || rules.deny.length > 0;

/**
 * The Network port on a Linux host: the instance's bridge (made by openInstance), addresses of
 * its subnet, a veth per sandbox on an isolated bridge port, the nft table (firewall, NAT,
 * per-sandbox rules) and the DNS forwarder on the gateway (both in egress.ts). Keeps no files:
 * the runtime saves each sandbox's address, mode and rules and hands them to `adopt` after a
 * restart.
 */
export class OciNetwork implements Network {
  readonly natAllowed: boolean;
  private readonly pool: AddressPool;
  private readonly egress: Egress;
  private readonly sandboxes = new Map<string, Attached>();
  private installed?: Promise<void>;

  constructor(private readonly opts: EgressOpts) {
    this.natAllowed = opts.allowNat;
    this.pool = new AddressPool(opts.instance.subnet);
    this.egress = new Egress(opts);
  }

  private get instance(): Instance {
    return this.opts.instance;
  }

  private attachment(sandbox: Attached): NetworkAttachment {
    return { address: sandbox.address, gateway: this.instance.subnet.gateway, resolvConf: resolvConf(this.instance, sandbox.mode === 'nat') };
  }

  /** The firewall goes in before the first sandbox is attached: without adopt, with no NAT sandbox in it. */
  private install(): Promise<void> {
    this.installed ??= this.egress.install([]);
    return this.installed;
  }

  async adopt(sandboxes: AttachedSandbox[]): Promise<void> {
    if (this.installed) throw new Error('adopt must come before any attach');
    for (const s of sandboxes) {
      this.pool.reserve(s.address);
      this.sandboxes.set(s.id, { ...s });
    }
    const nat = sandboxes.filter((s) => s.mode === 'nat' && s.netnsPath !== undefined);
    this.installed = this.egress.install(nat.map((s) => s.address));
    await this.installed;
    for (const s of nat) if (hasRules(s.egress)) await this.egress.setRules(s.address, s.id, s.egress);
  }

  async attach(sandbox: NetworkSandbox): Promise<NetworkAttachment> {
    const { id, netnsPath, mode } = sandbox;
    if (this.sandboxes.has(id)) throw new Error(`sandbox ${id} is attached already`);
    if (mode === 'nat' && !this.natAllowed) {
      throw Object.assign(new Error('egress (--network nat) is turned off on this daemon'), { code: 'NETWORK_NOT_ALLOWED' });
    }
    await this.install();
    const attached: Attached = { id, netnsPath, mode, egress: sandbox.egress ?? NO_EGRESS_RULES, address: this.pool.take(id) };
    this.sandboxes.set(id, attached);
    try {
      if (mode === 'nat') await this.egress.allow(attached.address);
      await attachSandbox(this.instance, id, netnsPath, attached.address, mode === 'nat');
      if (mode === 'nat' && hasRules(attached.egress)) await this.egress.setRules(attached.address, id, attached.egress);
    } catch (e) {
      await this.detach(id).catch(() => {});
      throw e;
    }
    return this.attachment(attached);
  }

  async setEgress(id: string, change: { mode?: NetworkMode; rules: EgressRules }): Promise<NetworkAttachment> {
    const sandbox = this.sandboxes.get(id);
    if (!sandbox) throw new Error(`sandbox ${id} is not attached`);
    if (change.mode === 'nat' && sandbox.mode !== 'nat') {
      if (!sandbox.netnsPath) throw new Error(`sandbox ${id} is not running`);
      await this.egress.allow(sandbox.address);
      await addDefaultRoute(this.instance, sandbox.netnsPath);
      sandbox.mode = 'nat';
    }
    if (sandbox.mode === 'nat') await this.egress.setRules(sandbox.address, id, change.rules);
    sandbox.egress = change.rules;
    return this.attachment(sandbox);
  }

  /**
   * The veth first (the sandbox is cut off at once), then its NAT entry, then its rules: never
   * a moment with NAT but without the rules. The address is freed only when all of it is gone.
   */
  async detach(id: string): Promise<void> {
    await detachSandbox(this.instance, id);
    const sandbox = this.sandboxes.get(id);
    if (!sandbox) return;
    if (sandbox.mode === 'nat') {
      await this.egress.revoke(sandbox.address);
      await this.egress.setRules(sandbox.address, id, NO_EGRESS_RULES);
    }
    this.sandboxes.delete(id);
    this.pool.release(sandbox.address);
  }

  async list(): Promise<AttachedSandbox[]> {
    return [...this.sandboxes.values()].map((s) => ({ ...s }));
  }

  /** Host veths with this instance's alias prefix whose sandbox is not in `held`. */
  async diagnose(held: Set<string>): Promise<Leftover[]> {
    const leftovers: Leftover[] = [];
    for (const link of await fs.readdir('/sys/class/net').catch(() => [] as string[])) {
      const alias = (await fs.readFile(`/sys/class/net/${link}/ifalias`, 'utf8').catch(() => '')).trim();
      const id = alias.startsWith(this.instance.vethAliasPrefix) ? alias.slice(this.instance.vethAliasPrefix.length) : undefined;
      if (id && !held.has(id)) leftovers.push({ sandboxId: id, what: `veth ${link}` });
    }
    return leftovers;
  }

  close(): Promise<void> {
    return this.egress.close();
  }
}

/** What the instance's host network holds for a sandbox (its veth, NAT entry, rules chain): empty once detached. For tests. */
export async function findNetworkResidue(instance: Instance, id: string, address: string): Promise<string[]> {
  const left: string[] = [];
  const veth = vethName(instance, id);
  if (existsSync(`/sys/class/net/${veth}`)) left.push(`veth ${veth}`);
  const natSet = await runCmd('nft', ['list', 'set', 'inet', instance.nftTable, NAT_SET]);
  if (new RegExp(`[{ ,]${address.replaceAll('.', '\\.')}[ ,}\\n]`).test(natSet.stdout)) left.push(`nft element ${address} of ${NAT_SET}`);
  const chain = rulesChain(instance, id);
  if ((await runCmd('nft', ['list', 'chain', 'inet', instance.nftTable, chain])).code === 0) left.push(`nft chain ${chain}`);
  return left;
}

/** The CIDRs in a sandbox's allow and deny sets, as nft lists them (undefined: it has no rules chain). For tests. */
export async function firewallRules(instance: Instance, id: string): Promise<EgressRules | undefined> {
  const chain = rulesChain(instance, id);
  const read = async (set: string) => {
    const r = await runCmd('nft', ['list', 'set', 'inet', instance.nftTable, `${chain}_${set}`]);
    if (r.code !== 0) return undefined;
    const elements = /elements = \{([^}]*)\}/.exec(r.stdout)?.[1] ?? '';
    return elements.split(',').map((e) => e.trim()).filter(Boolean);
  };
  const [allow, deny] = await Promise.all([read('allow'), read('deny')]);
  return allow && deny ? { allow, deny } : undefined;
}
