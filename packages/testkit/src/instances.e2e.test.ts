// Two roostd on one host (two data dirs, real OCI driver) never touch each other: each has its
// own bridge, subnet, nft table, cgroup parent, veths and region of host uids; stopping and
// starting one leaves the other's sandboxes working (NAT egress, its nft set) and keeps its
// region; each one's doctor sees only its own.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CommandHandle, SandboxHandle } from '@roost/sdk';
import { hostIdBase, readInstance, type Instance } from '@roost/runtime-oci';
import { sandboxRootHostUid } from './host-uids.js';
import { startFakeOutside, type FakeOutside } from './outside.js';
import { startDaemon, type TestDaemon } from './start-daemon.js';

async function collect(handle: CommandHandle) {
  const out = { stdout: '', stderr: '' };
  for await (const chunk of handle.output()) out[chunk.stream] += Buffer.from(chunk.data).toString();
  return { ...out, exitCode: (await handle.wait()).exitCode };
}

interface Side {
  daemon: TestDaemon;
  instance: Instance;
  nat: SandboxHandle;
  plain: SandboxHandle;
}

describe('two roostd instances on one host', () => {
  let outside: FakeOutside;
  const sides: Side[] = [];
  /** Every daemon started, to close whatever happens. */
  const daemons: TestDaemon[] = [];
  const start = (dataDir?: string) =>
    startDaemon({
      driver: 'oci',
      dataDir,
      config: { network: { allowNat: true, dnsServers: [`127.0.0.1:${outside.dnsPort}`], egressAllowCidrs: [`${outside.prefix}.0/24`] } },
    });

  /** What a sandbox reaches: the outside by name (NAT sandboxes only). */
  async function egress(sandbox: SandboxHandle): Promise<string> {
    return (await collect(sandbox.exec(['bash', '-c', 'curl -sS --max-time 3 http://outside.test:8080/ 2>/dev/null; echo "curl=$?"']))).stdout;
  }
  const natSet = (instance: Instance) => execFileSync('nft', ['list', 'set', 'inet', instance.nftTable, 'nat_sandboxes']).toString();
  const reachesOutside = `hello from ${'OUT'}\ncurl=0\n`;

  before(async () => {
    outside = await startFakeOutside({ names: {} });
    outside.names.set('outside.test', outside.address);
    // Both at once: their start-ups (bridge, subnet pick, nft table) race on purpose.
    const started = await Promise.allSettled([start(), start()]);
    for (const result of started) if (result.status === 'fulfilled') daemons.push(result.value);
    for (const result of started) if (result.status === 'rejected') throw result.reason;
    for (const daemon of daemons) {
      const instance = readInstance(`${daemon.dataDir}/runtime`);
      const nat = await daemon.sdk.sandboxes.create({ name: 'nat-box', network: 'nat' });
      const plain = await daemon.sdk.sandboxes.create({ name: 'plain-box' });
      sides.push({ daemon, instance, nat, plain });
    }
  });

  after(async () => {
    for (const daemon of daemons) await daemon.close().catch(() => {});
    await outside?.close();
  });

  it('gives each instance its own bridge, subnet, nft table and cgroup parent', () => {
    const [a, b] = sides.map((side) => side.instance);
    for (const key of ['name', 'bridge', 'nftTable', 'cgroupParent', 'vethAliasPrefix'] as const) assert.notEqual(a![key], b![key], key);
    assert.ok(a!.subnet.last < b!.subnet.first || b!.subnet.last < a!.subnet.first, `${a!.subnet.text} and ${b!.subnet.text} overlap`);
    for (const instance of [a!, b!]) {
      assert.ok(existsSync(`/sys/class/net/${instance.bridge}`), instance.bridge);
      assert.match(execFileSync('nft', ['list', 'table', 'inet', instance.nftTable]).toString(), new RegExp(`iifname "${instance.bridge}"`));
    }
  });

  it('each NAT sandbox reaches the outside, each plain one does not, and each doctor is clean', async () => {
    for (const side of sides) {
      assert.equal(await egress(side.nat), reachesOutside.replace('OUT', outside.address));
      assert.match(await egress(side.plain), /^curl=(6|7|28)\n$/);
      const doctor = await side.daemon.sdk.doctor();
      assert.deepEqual(doctor.leftovers, []);
    }
  });

  it('stopping and restarting one leaves the other working, and adopts its own sandboxes', async () => {
    const [a, b] = sides as [Side, Side];
    const aSetBefore = natSet(a.instance);
    assert.match(aSetBefore, /elements = \{ [\d.]+ \}/);
    await b.daemon.stop();
    // B's sandboxes keep running without their daemon; A is untouched.
    assert.equal(await egress(a.nat), reachesOutside.replace('OUT', outside.address));
    assert.deepEqual((await a.daemon.sdk.doctor()).leftovers, [], "A's doctor does not count B's live sandboxes as residue");

    daemons.splice(daemons.indexOf(b.daemon), 1);
    const restarted = await start(b.daemon.dataDir);
    daemons.push(restarted);
    sides[1] = { ...b, daemon: restarted };
    assert.equal(natSet(a.instance), aSetBefore, "B's start leaves A's NAT set as it was");
    assert.equal(await egress(a.nat), reachesOutside.replace('OUT', outside.address));
    const adoptedNat = await restarted.sdk.sandboxes.get('nat-box');
    assert.equal(await egress(adoptedNat), reachesOutside.replace('OUT', outside.address));
    assert.deepEqual((await restarted.sdk.doctor()).leftovers, []);
    assert.deepEqual((await a.daemon.sdk.doctor()).leftovers, []);
  });

  it("runs each instance's sandboxes as host uids of its own region, kept across the restart", async () => {
    const [a, b] = sides as [Side, Side];
    assert.notEqual(a.instance.idRegion.number, undefined, 'a test daemon is not the default instance');
    assert.notEqual(b.instance.idRegion.number, undefined);
    assert.notEqual(a.instance.idRegion.number, b.instance.idRegion.number, 'two instances started at once got different regions');
    // The first sandbox of each daemon (made before B's restart, adopted by the new B).
    const firstUids = sides.map((side) => sandboxRootHostUid(side.daemon.dataDir, side.nat.id));
    assert.notEqual(firstUids[0], firstUids[1], "each daemon's first sandbox runs as a different host uid");
    const seen = new Map<number, string>();
    for (const side of sides) {
      const { idRegion } = side.instance;
      assert.deepEqual(readInstance(`${side.daemon.dataDir}/runtime`).idRegion, idRegion, 'the instance keeps its region (B was restarted)');
      const regionIds = { first: hostIdBase(idRegion.first), end: hostIdBase(idRegion.first + idRegion.size - 1) + 65_536 };
      const fresh = await side.daemon.sdk.sandboxes.create({ name: 'uid-box' });
      // Handles through this side's daemon now (B's first ones spoke to the B before its restart).
      const held = await Promise.all(['nat-box', 'plain-box'].map((name) => side.daemon.sdk.sandboxes.get(name)));
      for (const sandbox of [...held, fresh]) {
        const uid = sandboxRootHostUid(side.daemon.dataDir, sandbox.id);
        assert.ok(uid >= regionIds.first && uid < regionIds.end, `${side.instance.name}'s sandbox runs as ${uid}, outside its region ${regionIds.first}..${regionIds.end - 1}`);
        assert.equal((uid - regionIds.first) % 65_536, 0, 'root is the first id of a range');
        assert.equal(seen.get(uid), undefined, `host uid ${uid} is used by two sandboxes`);
        seen.set(uid, sandbox.id);
        // What root in the sandbox writes is owned on the host by that uid, as the host sees the
        // sandbox's root (its workspace stores it as the canonical 1000000: docs/workspaces.md).
        const wrote = await collect(sandbox.exec(['bash', '-c', 'echo mine > /root/owner-probe && id -u']));
        assert.deepEqual(wrote, { stdout: '0\n', stderr: '', exitCode: 0 });
        assert.equal(statSync(join(side.daemon.dataDir, 'runtime', 'sandboxes', sandbox.id, 'rootfs', 'root', 'owner-probe')).uid, uid);
      }
      await fresh.remove();
    }
  });

  it('refuses at start, with one clear line, a subnet another instance or a host route uses', async () => {
    const [a] = sides as [Side, Side];
    const bridges = () => readdirSync('/sys/class/net').filter((link) => link.startsWith('roost')).sort();
    const bridgesBefore = bridges();
    await assert.rejects(
      startDaemon({ driver: 'oci', config: { network: { subnet: a.instance.subnet.text } } }),
      new RegExp(`sandbox subnet ${a.instance.subnet.text.replaceAll('.', '\\.')} of roostd instance "i[0-9a-f]{7}" overlaps ${a.instance.subnet.text.replaceAll('.', '\\.')} of bridge ${a.instance.bridge} .*set ROOST_SUBNET`),
    );
    await assert.rejects(
      startDaemon({ driver: 'oci', config: { network: { subnet: `${outside.prefix}.0/24` } } }),
      /overlaps the host's route ".*dev rto[0-9a-f]+.*": set ROOST_SUBNET/,
    );
    await assert.rejects(startDaemon({ driver: 'oci', config: { network: { subnet: '10.213.128.0/20' } } }), /overlaps 10\.213\.0\.0\/16/);
    // A refused start leaves no bridge behind, and the running instances are untouched.
    assert.deepEqual(bridges(), bridgesBefore);
    assert.equal(await egress(a.nat), reachesOutside.replace('OUT', outside.address));
  });
});
