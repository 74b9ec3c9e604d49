// A Network for unit tests and for drivers without a host network: addresses from an
// in-memory pool of one subnet, modes and egress rules recorded, nothing isolated or enforced.
// The conformance suite runs it with its isolation checks off.
import type {
  AttachedSandbox, EgressRules, Leftover, Network, NetworkAttachment, NetworkMode, NetworkSandbox,
} from '@roost/core';

export interface FakeNetworkOpts {
  natAllowed?: boolean;
  /** Sandboxes get <prefix>.2 …; <prefix>.1 is the gateway. Default 10.99.0 (253 addresses). */
  prefix?: string;
}

const NONE: EgressRules = { allow: [], deny: [] };

export class FakeNetwork implements Network {
  readonly natAllowed: boolean;
  private readonly prefix: string;
  private readonly sandboxes = new Map<string, AttachedSandbox>();
  private attached = false;

  constructor(opts: FakeNetworkOpts = {}) {
    this.natAllowed = opts.natAllowed ?? true;
    this.prefix = opts.prefix ?? '10.99.0';
  }

  private attachment(sandbox: AttachedSandbox): NetworkAttachment {
    return {
      address: sandbox.address,
      gateway: `${this.prefix}.1`,
      resolvConf: sandbox.mode === 'nat' ? `nameserver ${this.prefix}.1\n` : '# no network\n',
    };
  }

  private freeAddress(): string {
    const used = new Set([...this.sandboxes.values()].map((s) => s.address));
    for (let host = 2; host < 255; host++) {
      const address = `${this.prefix}.${host}`;
      if (!used.has(address)) return address;
    }
    throw new Error(`no free address left in ${this.prefix}.0/24`);
  }

  async attach(sandbox: NetworkSandbox): Promise<NetworkAttachment> {
    if (this.sandboxes.has(sandbox.id)) throw new Error(`sandbox ${sandbox.id} is attached already`);
    if (sandbox.mode === 'nat' && !this.natAllowed) {
      throw Object.assign(new Error('egress (--network nat) is turned off on this daemon'), { code: 'NETWORK_NOT_ALLOWED' });
    }
    this.attached = true;
    const attached: AttachedSandbox = {
      id: sandbox.id, address: this.freeAddress(), mode: sandbox.mode, egress: sandbox.egress ?? NONE, netnsPath: sandbox.netnsPath,
    };
    this.sandboxes.set(sandbox.id, attached);
    return this.attachment(attached);
  }

  async setEgress(id: string, change: { mode?: NetworkMode; rules: EgressRules }): Promise<NetworkAttachment> {
    const sandbox = this.sandboxes.get(id);
    if (!sandbox) throw new Error(`sandbox ${id} is not attached`);
    if (change.mode === 'nat' && sandbox.mode !== 'nat') {
      if (!this.natAllowed) throw Object.assign(new Error('egress (--network nat) is turned off on this daemon'), { code: 'NETWORK_NOT_ALLOWED' });
      if (!sandbox.netnsPath) throw new Error(`sandbox ${id} is not running`);
      sandbox.mode = 'nat';
    }
    sandbox.egress = change.rules;
    return this.attachment(sandbox);
  }

  async detach(id: string): Promise<void> {
    this.sandboxes.delete(id);
  }

  async adopt(sandboxes: AttachedSandbox[]): Promise<void> {
    if (this.attached) throw new Error('adopt must come before any attach');
    for (const s of sandboxes) this.sandboxes.set(s.id, { ...s });
  }

  async list(): Promise<AttachedSandbox[]> {
    return [...this.sandboxes.values()].map((s) => ({ ...s }));
  }

  /** What the fake holds for a sandbox: its record, for the conformance suite's residue check. */
  residue(id: string): string[] {
    const sandbox = this.sandboxes.get(id);
    return sandbox ? [`address ${sandbox.address}`] : [];
  }

  /** The rules it recorded for a NAT sandbox (what a real network would enforce); undefined: none. */
  rulesOf(id: string): EgressRules | undefined {
    const sandbox = this.sandboxes.get(id);
    return sandbox?.mode === 'nat' && (sandbox.egress.allow.length || sandbox.egress.deny.length) ? sandbox.egress : undefined;
  }

  async diagnose(_held: Set<string>): Promise<Leftover[]> {
    return [];
  }

  async close(): Promise<void> {}
}
