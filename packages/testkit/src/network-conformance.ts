// The Network port's conformance suite: every implementation, and the fake, must pass it.
// With `isolation`, it also checks what the host enforces: that two attached sandboxes cannot
// reach each other (with a positive control from where they can).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { EgressRules, Network } from '@roost/core';

/** How a connection attempt from inside a netns ended: 'connected', or how it failed. */
export type ProbeResult = 'connected' | 'timeout' | 'ECONNREFUSED' | 'EHOSTUNREACH' | 'ENETUNREACH';

export interface NetworkUnderTest {
  network: Network;
  /** A fresh network namespace (its path) to stand for a sandbox; cleanup removes it. */
  newNetns(): Promise<string>;
  /** Closes `old` and makes a new Network over the same host state, as a restarted daemon does (not yet adopted). */
  reopen(old: Network): Promise<Network>;
  /** What the host still holds for the sandbox (veth, firewall entries); empty once it is detached. */
  residue(id: string, address: string): Promise<string[]>;
  /** The CIDR rules the host enforces for the sandbox; undefined when none are. */
  enforcedRules(id: string): Promise<EgressRules | undefined>;
  /** isolation only: a TCP server in the netns on every address at `port`; resolves once it listens, returns its stop. */
  listen?(netnsPath: string, port: number): Promise<() => Promise<void>>;
  /** isolation only: a TCP connection from inside the netns; throws when the probe itself could not run. */
  probe?(netnsPath: string, address: string, port: number): Promise<ProbeResult>;
  /** Removes everything the harness made (netns, instance), also after a failure. */
  cleanup(): Promise<void>;
}

export interface NetworkConformanceOpts {
  name: string;
  /** A network on its own host state; `natAllowed` false: one that refuses NAT (default: allows it). */
  newNetwork(opts?: { natAllowed?: boolean }): Promise<NetworkUnderTest>;
  /** Check isolation between attached sandboxes and host residue (real networks only). */
  isolation: boolean;
}

const IPV4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const NO_RULES: EgressRules = { allow: [], deny: [] };
const PORT = 7357;

export function networkConformance(opts: NetworkConformanceOpts): void {
  describe(`Network conformance: ${opts.name}`, () => {
    let h: NetworkUnderTest;
    let net: Network;
    let seq = 0;
    const newId = () => `nt${process.pid}x${++seq}`;

    before(async () => {
      h = await opts.newNetwork();
      net = h.network;
    });
    after(async () => {
      for (const s of await net.list()) await net.detach(s.id).catch(() => {});
      await net.close();
      await h.cleanup();
    });

    it('gives each sandbox its own address on one subnet; detach frees it and leaves nothing', async () => {
      const [a, b] = [newId(), newId()];
      const atA = await net.attach({ id: a, netnsPath: await h.newNetns(), mode: 'none' });
      const atB = await net.attach({ id: b, netnsPath: await h.newNetns(), mode: 'nat' });
      assert.match(atA.address, IPV4_RE);
      assert.match(atB.address, IPV4_RE);
      assert.notEqual(atA.address, atB.address);
      assert.equal(atA.gateway, atB.gateway);
      assert.ok(![atA.gateway].includes(atA.address) && atB.address !== atB.gateway);
      // Same /24 at least: both come from the network's one subnet.
      assert.equal(atA.address.split('.').slice(0, 2).join('.'), atB.address.split('.').slice(0, 2).join('.'));
      assert.match(atB.resolvConf, new RegExp(`nameserver ${atB.gateway.replaceAll('.', '\\.')}`));
      assert.doesNotMatch(atA.resolvConf, /^nameserver/m);
      assert.deepEqual((await net.list()).map((s) => [s.id, s.address, s.mode]).sort(), [[a, atA.address, 'none'], [b, atB.address, 'nat']].sort());
      // Positive control for the residue check below: attached, the host holds something.
      assert.notDeepEqual(await h.residue(a, atA.address), []);
      assert.notDeepEqual(await h.residue(b, atB.address), []);
      await assert.rejects(net.attach({ id: a, netnsPath: await h.newNetns(), mode: 'none' }), /attached already/);

      await net.detach(a);
      await net.detach(b);
      await net.detach(b);
      await net.detach('never-attached');
      assert.deepEqual(await h.residue(a, atA.address), []);
      assert.deepEqual(await h.residue(b, atB.address), []);
      assert.deepEqual(await net.list(), []);
    });

    it('sets, changes and clears egress rules; a sandbox without NAT gets them with NAT', async () => {
      const [a, b] = [newId(), newId()];
      const rules = { allow: ['198.51.100.0/24'], deny: ['192.0.2.0/25'] };
      const atA = await net.attach({ id: a, netnsPath: await h.newNetns(), mode: 'nat', egress: rules });
      assert.deepEqual(await h.enforcedRules(a), rules);
      await net.setEgress(a, { rules: { allow: [], deny: ['192.0.2.128/25'] } });
      assert.deepEqual(await h.enforcedRules(a), { allow: [], deny: ['192.0.2.128/25'] });
      assert.deepEqual((await net.list()).find((s) => s.id === a)?.egress, { allow: [], deny: ['192.0.2.128/25'] });
      await net.setEgress(a, { rules: NO_RULES });
      assert.equal(await h.enforcedRules(a), undefined);

      const atB = await net.attach({ id: b, netnsPath: await h.newNetns(), mode: 'none' });
      await net.setEgress(b, { rules });
      assert.equal(await h.enforcedRules(b), undefined, 'rules apply only to a NAT sandbox');
      const widened = await net.setEgress(b, { mode: 'nat', rules });
      assert.equal(widened.address, atB.address);
      assert.match(widened.resolvConf, /^nameserver /m);
      assert.deepEqual(await h.enforcedRules(b), rules);
      // A mode never narrows.
      await net.setEgress(b, { mode: 'none', rules });
      assert.equal((await net.list()).find((s) => s.id === b)?.mode, 'nat');
      await assert.rejects(net.setEgress('never-attached', { rules }), /not attached/);

      await net.detach(a);
      await net.detach(b);
      assert.deepEqual(await h.residue(a, atA.address), []);
      assert.deepEqual(await h.residue(b, atB.address), []);
      assert.equal(await h.enforcedRules(b), undefined);
    });

    it('adopt after a restart keeps addresses, modes and rules; new sandboxes get other addresses', async () => {
      const [a, b, c] = [newId(), newId(), newId()];
      const rules = { allow: [], deny: ['192.0.2.0/24'] };
      await net.attach({ id: a, netnsPath: await h.newNetns(), mode: 'nat', egress: rules });
      await net.attach({ id: b, netnsPath: await h.newNetns(), mode: 'none' });
      const saved = await net.list();
      net = await h.reopen(net);
      await net.adopt(saved);
      assert.deepEqual((await net.list()).sort((x, y) => x.id.localeCompare(y.id)), saved.sort((x, y) => x.id.localeCompare(y.id)));
      assert.deepEqual(await h.enforcedRules(a), rules);
      const atC = await net.attach({ id: c, netnsPath: await h.newNetns(), mode: 'none' });
      assert.ok(!saved.some((s) => s.address === atC.address), `${atC.address} was handed out again`);
      await assert.rejects(net.adopt(saved), /before any attach/);

      for (const s of await net.list()) await net.detach(s.id);
      for (const s of [...saved, { id: c, address: atC.address }]) assert.deepEqual(await h.residue(s.id, s.address), []);
    });

    it('diagnose names what it holds only for sandboxes not held', async () => {
      const a = newId();
      await net.attach({ id: a, netnsPath: await h.newNetns(), mode: 'none' });
      assert.deepEqual((await net.diagnose(new Set([a]))).filter((l) => l.sandboxId === a), []);
      if (opts.isolation) assert.ok((await net.diagnose(new Set())).some((l) => l.sandboxId === a));
      await net.detach(a);
      assert.deepEqual((await net.diagnose(new Set())).filter((l) => l.sandboxId === a), []);
    });

    it('refuses NAT where it is not allowed, at attach and at setEgress', async () => {
      const closed = await opts.newNetwork({ natAllowed: false });
      try {
        const n = closed.network;
        assert.equal(n.natAllowed, false);
        const [a, b] = [newId(), newId()];
        await assert.rejects(n.attach({ id: a, netnsPath: await closed.newNetns(), mode: 'nat' }), { code: 'NETWORK_NOT_ALLOWED' });
        assert.deepEqual(await n.list(), []);
        // Positive control: the same network attaches a sandbox without NAT.
        const atB = await n.attach({ id: b, netnsPath: await closed.newNetns(), mode: 'none' });
        await assert.rejects(n.setEgress(b, { mode: 'nat', rules: NO_RULES }), { code: 'NETWORK_NOT_ALLOWED' });
        assert.equal((await n.list())[0]?.mode, 'none');
        await n.detach(b);
        assert.deepEqual(await closed.residue(a, '0.0.0.0'), []);
        assert.deepEqual(await closed.residue(b, atB.address), []);
        await n.close();
      } finally {
        await closed.cleanup();
      }
    });

    it('two attached sandboxes cannot reach each other', { skip: !opts.isolation }, async () => {
      const [a, b] = [newId(), newId()];
      const [nsA, nsB] = [await h.newNetns(), await h.newNetns()];
      const atA = await net.attach({ id: a, netnsPath: nsA, mode: 'nat' });
      const atB = await net.attach({ id: b, netnsPath: nsB, mode: 'nat' });
      const stop = await h.listen!(nsB, PORT);
      try {
        // Positive controls: b's server answers on b's address from inside b, and a's network
        // works (its DNS forwarder on the gateway answers a TCP connection).
        assert.equal(await h.probe!(nsB, atB.address, PORT), 'connected');
        assert.equal(await h.probe!(nsA, atA.gateway, 53), 'connected');
        const fromA = await h.probe!(nsA, atB.address, PORT);
        assert.ok(['timeout', 'EHOSTUNREACH', 'ENETUNREACH'].includes(fromA), `a reached b: ${fromA}`);
      } finally {
        await stop();
        await net.detach(a);
        await net.detach(b);
      }
    });
  });
}
