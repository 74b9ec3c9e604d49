// Host-side firewall of the sandbox bridge, and egress (NAT) for the sandboxes that ask for it.
//
// Always (when the runtime starts): nft table `inet roost` drops whatever a sandbox sends to
// the host itself or routes through it, except replies and, for NAT sandboxes, DNS to the
// gateway and traffic out to the world. Only when the first NAT sandbox is made: the bridge
// gets the gateway address, ip_forward is turned on, masquerading applies, and a DNS forwarder
// listens on the gateway. Every host-global step is logged; docs/operations.md lists them.
import { existsSync, promises as fs } from 'node:fs';
import type { Logger } from '@roost/core';
import { BRIDGE, GATEWAY, SUBNET_BITS, SUBNET_PREFIX } from './constants.js';
import { DnsForwarder, parseUpstreams } from './dns-forwarder.js';
import { mustRun, runCmd } from './proc.js';

export const NFT_TABLE = 'roost';
const SET = 'nat_sandboxes';
const IP_FORWARD = '/proc/sys/net/ipv4/ip_forward';

export interface EgressOpts {
  allowNat: boolean;
  /** Upstream resolvers for the DNS forwarder; empty: /etc/resolv.conf. */
  dnsServers: string[];
  logger: Logger;
}

/** The whole table, replaced in one nft transaction (no moment without the drop rules). */
function tableScript(natAddresses: string[]): string {
  const subnet = `${SUBNET_PREFIX}.0.0/${SUBNET_BITS}`;
  const elements = natAddresses.length ? `elements = { ${natAddresses.join(', ')} }` : '';
  return `table inet ${NFT_TABLE}
delete table inet ${NFT_TABLE}
table inet ${NFT_TABLE} {
  set ${SET} { type ipv4_addr; ${elements} }
  chain input {
    type filter hook input priority filter - 10; policy accept;
    iifname "${BRIDGE}" ct state established,related accept
    iifname "${BRIDGE}" ip saddr @${SET} ip daddr ${GATEWAY} meta l4proto { tcp, udp } th dport 53 accept
    iifname "${BRIDGE}" counter drop
  }
  chain forward {
    type filter hook forward priority filter - 10; policy accept;
    oifname "${BRIDGE}" ct state established,related accept
    oifname "${BRIDGE}" counter drop
    iifname "${BRIDGE}" ip saddr @${SET} ip daddr != { ${subnet}, 169.254.0.0/16 } accept
    iifname "${BRIDGE}" counter drop
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr ${subnet} oifname != "${BRIDGE}" masquerade
  }
}
`;
}

export class Egress {
  private natOn?: Promise<void>;
  private dns?: DnsForwarder;

  constructor(private readonly opts: EgressOpts) {}

  /** Installs the table, with the NAT sandboxes a previous daemon left running. */
  async install(natAddresses: string[]): Promise<void> {
    await mustRun('nft', ['-f', '-'], tableScript(natAddresses));
    this.opts.logger.warn(
      { change: `nft table inet ${NFT_TABLE} (drops sandbox traffic to the host and between sandboxes)`, undo: `nft delete table inet ${NFT_TABLE}` },
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
    await mustRun('nft', ['add', 'element', 'inet', NFT_TABLE, SET, `{ ${addr} }`]);
  }

  async revoke(addr: string): Promise<void> {
    const r = await runCmd('nft', ['delete', 'element', 'inet', NFT_TABLE, SET, `{ ${addr} }`]);
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
    const shown = await runCmd('ip', ['-4', 'addr', 'show', 'dev', BRIDGE]);
    if (!shown.stdout.includes(`inet ${GATEWAY}/`)) {
      await mustRun('ip', ['addr', 'add', `${GATEWAY}/${SUBNET_BITS}`, 'dev', BRIDGE]);
      logger.warn({ change: `ip addr add ${GATEWAY}/${SUBNET_BITS} dev ${BRIDGE}`, undo: `ip addr del ${GATEWAY}/${SUBNET_BITS} dev ${BRIDGE}` }, 'host-global change: gateway address for NAT sandboxes');
    }
    const forwarding = existsSync(IP_FORWARD) ? (await fs.readFile(IP_FORWARD, 'utf8')).trim() : '1';
    if (forwarding !== '1') {
      await fs.writeFile(IP_FORWARD, '1\n');
      logger.warn({ change: 'sysctl net.ipv4.ip_forward=1', was: forwarding, undo: `sysctl net.ipv4.ip_forward=${forwarding}` }, 'host-global change: IPv4 forwarding on for NAT sandboxes');
    }
    const dns = new DnsForwarder(parseUpstreams(this.opts.dnsServers), logger);
    await dns.listen(GATEWAY);
    this.dns = dns;
  }
}
