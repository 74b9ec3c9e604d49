// Host-side firewall of an instance's sandbox bridge, and egress (NAT) for the sandboxes that ask for it.
//
// Always (when the runtime starts): the instance's nft table drops whatever a sandbox sends to
// the host itself or routes through it, except replies and, for NAT sandboxes, DNS to the
// gateway and traffic out to the public internet. Only when the first NAT sandbox is made: the
// bridge gets the gateway address, ip_forward is turned on, masquerading applies, and a DNS
// forwarder listens on the gateway. Every host-global step is logged; docs/operations.md lists them.
import { existsSync, promises as fs } from 'node:fs';
import { domainMatches, parseEgressRule, type EgressRules, type Logger } from '@roost/core';
import { DnsForwarder, parseUpstreams, type DnsPolicy } from './dns-forwarder.js';
import type { AddressRecord } from './dns-message.js';
import { parseCidr, vethName, type Instance } from './instance.js';
import { mustRun, runCmd } from './proc.js';

/** Addresses of the NAT sandboxes: only these may leave through the bridge. */
export const NAT_SET = 'nat_sandboxes';
const SET = NAT_SET;
/** Verdict map: a sandbox with egress rules → jump to its own chain. */
const RULES_MAP = 'sandbox_rules';
/** How long an address learnt from a DNS answer stays allowed: the answer's TTL, within these. */
const LEARNT_MIN_S = 30;
const LEARNT_MAX_S = 86_400;
const IP_FORWARD = '/proc/sys/net/ipv4/ip_forward';

/**
 * Where NAT sandboxes may never go unless the admin allows a range: every IPv4 range that is
 * not the public internet (IANA special-purpose registry): this network, RFC 1918, CGNAT,
 * loopback, link-local (cloud metadata at 169.254.169.254), IETF protocol assignments, the
 * documentation and benchmarking ranges, 6to4 relays, multicast, reserved and broadcast.
 * The host's own addresses are not routed but delivered locally: the input chain drops those.
 */
export const NON_PUBLIC_V4 = [
  '0.0.0.0/8', '10.0.0.0/8', '100.64.0.0/10', '127.0.0.0/8', '169.254.0.0/16', '172.16.0.0/12',
  '192.0.0.0/24', '192.0.2.0/24', '192.88.99.0/24', '192.168.0.0/16', '198.18.0.0/15',
  '198.51.100.0/24', '203.0.113.0/24', '224.0.0.0/4', '240.0.0.0/4',
];

export interface EgressOpts {
  instance: Instance;
  allowNat: boolean;
  /** Upstream resolvers for the DNS forwarder; empty: /etc/resolv.conf. */
  dnsServers: string[];
  /** Non-public IPv4 ranges the admin lets NAT sandboxes reach (ROOST_EGRESS_ALLOW_CIDRS). */
  allowCidrs: string[];
  logger: Logger;
}

/**
 * The whole table, replaced in one nft transaction (no moment without the drop rules).
 * Interval sets are auto-merge: without it nft refuses overlapping ranges ("conflicting
 * intervals"), e.g. an admin's 10.0.0.0/8 beside 10.1.0.0/16.
 */
function tableScript(opts: EgressOpts, natAddresses: string[]): string {
  const { bridge, nftTable: table, subnet } = opts.instance;
  const elements = (list: string[]) => (list.length ? `elements = { ${list.join(', ')} }` : '');
  return `table inet ${table}
delete table inet ${table}
table inet ${table} {
  set ${SET} { type ipv4_addr; ${elements(natAddresses)} }
  set non_public { type ipv4_addr; flags interval; auto-merge; ${elements(NON_PUBLIC_V4)} }
  set admin_allowed { type ipv4_addr; flags interval; auto-merge; ${elements(opts.allowCidrs)} }
  map ${RULES_MAP} { type ipv4_addr : verdict; }
  chain input {
    type filter hook input priority filter - 10; policy accept;
    iifname "${bridge}" ct state established,related accept
    iifname "${bridge}" ip saddr @${SET} ip daddr ${subnet.gateway} meta l4proto { tcp, udp } th dport 53 accept
    iifname "${bridge}" counter drop
  }
  chain forward {
    type filter hook forward priority filter - 10; policy accept;
    oifname "${bridge}" ct state established,related accept
    oifname "${bridge}" counter drop
    iifname "${bridge}" ip saddr != @${SET} counter drop
    iifname "${bridge}" ct state established,related accept
    iifname "${bridge}" ip daddr @non_public ip daddr != @admin_allowed counter drop comment "non-public destination"
    iifname "${bridge}" ip saddr vmap @${RULES_MAP}
    iifname "${bridge}" meta nfproto ipv4 accept
    iifname "${bridge}" counter drop
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr ${subnet.text} oifname != "${bridge}" masquerade
  }
}
`;
}

/** The nft chain of a sandbox's own egress rules; its sets are <chain>_allow, <chain>_deny and <chain>_dns. */
export function rulesChain(instance: Instance, id: string): string {
  return `sb_${vethName(instance, id).slice(2)}`;
}

/** A sandbox's rules as the firewall and the DNS forwarder use them. */
interface SandboxEgress {
  /** Its chain; its sets are <chain>_allow, <chain>_deny (CIDRs) and <chain>_dns (learnt addresses). */
  chain: string;
  allowCidrs: string[];
  denyCidrs: string[];
  allowDomains: string[];
  denyDomains: string[];
}

function splitRules(rules: EgressRules): Omit<SandboxEgress, 'chain'> {
  const split = (list: string[]) => {
    const parsed = list.map(parseEgressRule);
    return {
      cidrs: parsed.flatMap((r) => (r.kind === 'cidr' ? [r.cidr] : [])),
      domains: parsed.flatMap((r) => (r.kind === 'domain' ? [r.domain] : [])),
    };
  };
  const allow = split(rules.allow);
  const deny = split(rules.deny);
  return { allowCidrs: allow.cidrs, allowDomains: allow.domains, denyCidrs: deny.cidrs, denyDomains: deny.domains };
}

export class Egress {
  private natOn?: Promise<void>;
  private dns?: DnsForwarder;
  /** Sandboxes with egress rules, by address. */
  private readonly rules = new Map<string, SandboxEgress>();

  constructor(private readonly opts: EgressOpts) {
    for (const cidr of opts.allowCidrs) parseCidr(cidr);
  }

  private get table(): string {
    return this.opts.instance.nftTable;
  }

  /** Installs the table, with the NAT sandboxes a previous daemon left running. */
  async install(natAddresses: string[]): Promise<void> {
    await mustRun('nft', ['-f', '-'], tableScript(this.opts, natAddresses));
    this.opts.logger.warn(
      {
        change: `nft table inet ${this.table} (drops sandbox traffic to the host, between sandboxes, and to non-public ranges)`,
        adminAllowed: this.opts.allowCidrs,
        undo: `nft delete table inet ${this.table}`,
      },
      'host-global change: firewall for the sandbox bridge',
    );
    if (natAddresses.length > 0) await this.enableNat();
  }

  /** Lets the sandbox at `addr` out (turning NAT on first, once). */
  async allow(addr: string): Promise<void> {
    if (!this.opts.allowNat) {
      throw Object.assign(new Error('egress (--network nat) is turned off on this daemon'), { code: 'NETWORK_NOT_ALLOWED' });
    }
    await this.enableNat();
    await mustRun('nft', ['add', 'element', 'inet', this.table, SET, `{ ${addr} }`]);
  }

  /**
   * Replaces the egress rules of the NAT sandbox at `addr`, in one nft transaction: its own
   * chain (deny CIDRs dropped; with an allow-list, only allowed CIDRs and addresses learnt from
   * allowed names pass) and the map entry that jumps there. Empty rules remove all of it.
   */
  async setRules(addr: string, id: string, rules: EgressRules): Promise<void> {
    const t = `inet ${this.table}`;
    const existing = this.rules.get(addr);
    if (rules.allow.length === 0 && rules.deny.length === 0) {
      if (!existing) return;
      const { chain } = existing;
      await mustRun('nft', ['-f', '-'], [
        `delete element ${t} ${RULES_MAP} { ${addr} }`,
        `flush chain ${t} ${chain}`,
        `delete chain ${t} ${chain}`,
        ...['allow', 'deny', 'dns'].map((s) => `delete set ${t} ${chain}_${s}`),
      ].join('\n'));
      this.rules.delete(addr);
      return;
    }
    const chain = rulesChain(this.opts.instance, id);
    const parts = { chain, ...splitRules(rules) };
    const add = (set: string, list: string[]) => (list.length ? [`add element ${t} ${chain}_${set} { ${list.join(', ')} }`] : []);
    await mustRun('nft', ['-f', '-'], [
      `add chain ${t} ${chain}`,
      `flush chain ${t} ${chain}`,
      `add set ${t} ${chain}_allow { type ipv4_addr; flags interval; auto-merge; }`,
      `add set ${t} ${chain}_deny { type ipv4_addr; flags interval; auto-merge; }`,
      `add set ${t} ${chain}_dns { type ipv4_addr; flags timeout; }`,
      ...['allow', 'deny', 'dns'].map((s) => `flush set ${t} ${chain}_${s}`),
      ...add('allow', parts.allowCidrs),
      ...add('deny', parts.denyCidrs),
      `add rule ${t} ${chain} ip daddr @${chain}_deny counter drop comment "denied by the sandbox's rules"`,
      ...(rules.allow.length
        ? [
            `add rule ${t} ${chain} ip daddr @${chain}_allow return`,
            `add rule ${t} ${chain} ip daddr @${chain}_dns return`,
            `add rule ${t} ${chain} counter drop comment "not in the sandbox's allow-list"`,
          ]
        : []),
      `add element ${t} ${RULES_MAP} { ${addr} : jump ${chain} }`,
    ].join('\n'));
    this.rules.set(addr, parts);
  }

  /** What the DNS forwarder asks about the sandbox at `addr`: undefined when it has no rules. */
  private dnsPolicy(addr: string): DnsPolicy | undefined {
    const rules = this.rules.get(addr);
    if (!rules) return undefined;
    return {
      allows: (name) => !rules.denyDomains.some((pattern) => domainMatches(pattern, name)),
      learned: async (name: string, records: AddressRecord[]) => {
        if (records.length === 0 || !rules.allowDomains.some((pattern) => domainMatches(pattern, name))) return;
        // Still the same rules? (They may have changed while the upstream answered.)
        if (this.rules.get(addr) !== rules) return;
        const elements = records.map((r) => `${r.address} timeout ${Math.min(LEARNT_MAX_S, Math.max(LEARNT_MIN_S, r.ttlS))}s`);
        await mustRun('nft', ['add', 'element', 'inet', this.table, `${rules.chain}_dns`, `{ ${elements.join(', ')} }`]);
      },
    };
  }

  async revoke(addr: string): Promise<void> {
    const r = await runCmd('nft', ['delete', 'element', 'inet', this.table, SET, `{ ${addr} }`]);
    if (r.code !== 0 && !/No such file or directory|does not exist/.test(r.stderr)) {
      throw new Error(`nft delete element ${addr}: ${r.stderr.trim()}`);
    }
  }

  async close(): Promise<void> {
    await this.dns?.close();
  }

  private enableNat(): Promise<void> {
    this.natOn ??= this.doEnableNat().catch((error: unknown) => {
      this.natOn = undefined;
      throw error;
    });
    return this.natOn;
  }

  private async doEnableNat(): Promise<void> {
    const { logger } = this.opts;
    const { bridge, subnet } = this.opts.instance;
    const shown = await runCmd('ip', ['-4', 'addr', 'show', 'dev', bridge]);
    if (!shown.stdout.includes(`inet ${subnet.gateway}/`)) {
      await mustRun('ip', ['addr', 'add', `${subnet.gateway}/${subnet.bits}`, 'dev', bridge]);
      logger.warn(
        { change: `ip addr add ${subnet.gateway}/${subnet.bits} dev ${bridge}`, undo: `ip addr del ${subnet.gateway}/${subnet.bits} dev ${bridge}` },
        'host-global change: gateway address for NAT sandboxes',
      );
    }
    const forwarding = existsSync(IP_FORWARD) ? (await fs.readFile(IP_FORWARD, 'utf8')).trim() : '1';
    if (forwarding !== '1') {
      await fs.writeFile(IP_FORWARD, '1\n');
      logger.warn({ change: 'sysctl net.ipv4.ip_forward=1', was: forwarding, undo: `sysctl net.ipv4.ip_forward=${forwarding}` }, 'host-global change: IPv4 forwarding on for NAT sandboxes');
    }
    const dns = new DnsForwarder(parseUpstreams(this.opts.dnsServers), logger, {}, (addr) => this.dnsPolicy(addr));
    await dns.listen(subnet.gateway);
    this.dns = dns;
  }
}
