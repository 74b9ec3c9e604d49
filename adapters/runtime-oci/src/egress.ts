// Host-side firewall of an instance's sandbox bridge, and egress (NAT) for the sandboxes that ask for it.
//
// Always (when the runtime starts): the instance's nft table drops whatever a sandbox sends to
// the host itself or routes through it, except replies and, for NAT sandboxes, DNS to the
// gateway and traffic out to the public internet. Only when the first NAT sandbox is made: the
// bridge gets the gateway address, ip_forward is turned on, masquerading applies, and a DNS
// forwarder listens on the gateway. Every host-global step is logged; docs/operations.md lists them.
import { existsSync, promises as fs } from 'node:fs';
import type { Logger } from '@roost/core';
import { DnsForwarder, parseUpstreams } from './dns-forwarder.js';
import { parseCidr, type Instance } from './instance.js';
import { mustRun, runCmd } from './proc.js';

const SET = 'nat_sandboxes';
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

/** The whole table, replaced in one nft transaction (no moment without the drop rules). */
function tableScript(opts: EgressOpts, natAddresses: string[]): string {
  const { bridge, nftTable: table, subnet } = opts.instance;
  const elements = (list: string[]) => (list.length ? `elements = { ${list.join(', ')} }` : '');
  return `table inet ${table}
delete table inet ${table}
table inet ${table} {
  set ${SET} { type ipv4_addr; ${elements(natAddresses)} }
  set non_public { type ipv4_addr; flags interval; ${elements(NON_PUBLIC_V4)} }
  set admin_allowed { type ipv4_addr; flags interval; ${elements(opts.allowCidrs)} }
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
    iifname "${bridge}" ip daddr @non_public ip daddr != @admin_allowed counter drop comment "non-public destination"
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

export class Egress {
  private natOn?: Promise<void>;
  private dns?: DnsForwarder;

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
    const dns = new DnsForwarder(parseUpstreams(this.opts.dnsServers), logger);
    await dns.listen(subnet.gateway);
    this.dns = dns;
  }
}
