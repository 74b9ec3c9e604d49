// Per-sandbox egress rules with real nft and the real DNS forwarder: the outside (a netns) has
// two web servers under two names in the test's DNS server, and 169.254.169.254 routed there
// for this daemon's sandboxes, which the admin allows (so only the sandbox's own rules can
// refuse it). Each refusal is shown after the same sandbox reached the same target.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { CommandHandle, SandboxHandle } from '@roost/sdk';
import { readInstance } from '@roost/runtime-oci';
import { runCli } from './cli.js';
import { startFakeOutside, type FakeOutside } from './outside.js';
import { collectOutput } from './test-deps.js';
import { startDaemon, type TestDaemon } from './start-daemon.js';

const metadata = '169.254.169.254';

describe('per-sandbox egress rules (--allow-net, --deny-net)', () => {
  let outside: FakeOutside;
  let daemon: TestDaemon;
  let sandbox: SandboxHandle;
  let addressA = '';
  let addressB = '';

  /** One line per target: "<target> <curl exit code> <body>"; 28 is a timeout (dropped packets), 6 no such name. */
  async function reach(targets: string[]): Promise<string[]> {
    const script = targets.map((t) => `body=$(curl -sS --max-time 2 http://${t}:8080/ 2>/dev/null); echo "${t} $? $body"`).join('\n');
    const result = await collectOutput(sandbox.exec(['bash', '-c', script]));
    return result.stdout.replace(/\n$/, '').split('\n');
  }

  before(async () => {
    outside = await startFakeOutside({ hosts: [2, 3] });
    [addressA, addressB] = outside.addresses as [string, string];
    outside.names.set('a.test', addressA);
    outside.names.set('b.test', addressB);
    daemon = await startDaemon({
      driver: 'oci',
      config: { network: { allowNat: true, dnsServers: [`127.0.0.1:${outside.dnsPort}`], egressAllowCidrs: [`${outside.prefix}.0/24`, `${metadata}/32`] } },
    });
    outside.addRoutedAddress(metadata, readInstance(`${daemon.dataDir}/runtime`).subnet.text);
    sandbox = await daemon.sdk.sandboxes.create({ name: 'ruled', network: 'nat' });
  });

  after(async () => {
    await daemon?.close();
    await outside?.close();
  });

  it('without rules the sandbox reaches A, B and the (admin-allowed) metadata address', async () => {
    assert.deepEqual(await reach(['a.test', 'b.test', addressB, metadata]), [
      `a.test 0 hello from ${addressA}`,
      `b.test 0 hello from ${addressB}`,
      `${addressB} 0 hello from ${addressB}`,
      `${metadata} 0 hello from ${metadata}`,
    ]);
  });

  it('with only name A allowed: A works; B by name and by IP and the metadata address do not', async () => {
    const updated = await daemon.sdk.sandboxes.update('ruled', { allowNet: ['a.test'] });
    assert.deepEqual(updated.allowNet, ['a.test']);
    assert.deepEqual(await reach(['a.test', 'b.test', addressB, metadata]), [
      `a.test 0 hello from ${addressA}`,
      'b.test 28 ',
      `${addressB} 28 `,
      `${metadata} 28 `,
    ]);
  });

  it('deny beats allow: a denied name gets NXDOMAIN, the other allowed one works', async () => {
    await daemon.sdk.sandboxes.update('ruled', { allowNet: ['a.test', '*.test'], denyNet: ['a.test'] });
    const lookup = await collectOutput(sandbox.exec(['bash', '-c', 'getent hosts a.test; echo "getent=$?"']));
    assert.equal(lookup.stdout, 'getent=2\n');
    assert.deepEqual(await reach(['b.test', addressA]), [`b.test 0 hello from ${addressB}`, `${addressA} 28 `]);
  });

  it('roost set --clear-net gives the running sandbox every destination back', async () => {
    const env = { ROOST_API_URL: daemon.url, ROOST_API_TOKEN: daemon.adminToken };
    const cleared = await runCli(['set', 'ruled', '--clear-net', '--json'], { env });
    assert.equal(cleared.exitCode, 0, cleared.stderr);
    assert.deepEqual(JSON.parse(cleared.stdout).allowNet, []);
    assert.deepEqual(await reach(['a.test', 'b.test', metadata]), [
      `a.test 0 hello from ${addressA}`,
      `b.test 0 hello from ${addressB}`,
      `${metadata} 0 hello from ${metadata}`,
    ]);
  });

  it('roost new --allow-net takes CIDRs too (overlapping ones included), and refuses what is not a range or a name', async () => {
    const env = { ROOST_API_URL: daemon.url, ROOST_API_TOKEN: daemon.adminToken };
    // Overlapping ranges in one list are fine (nft would refuse them in a plain interval set).
    const overlapping = ['--deny-net', `${outside.prefix}.128/25`, '--deny-net', `${outside.prefix}.200/32`];
    const made = await runCli(['new', 'cidr-box', '--network', 'nat', '--allow-net', `${addressB}/32`, ...overlapping, '--json'], { env });
    assert.equal(made.exitCode, 0, made.stderr);
    sandbox = await daemon.sdk.sandboxes.get('cidr-box');
    assert.deepEqual(await reach([addressB, addressA]), [`${addressB} 0 hello from ${addressB}`, `${addressA} 28 `]);
    const bad = await runCli(['new', 'bad-box', '--network', 'nat', '--allow-net', '10.0.0.1/8'], { env });
    assert.equal(bad.exitCode, 1);
    assert.match(bad.stderr, /egress rule "10\.0\.0\.1\/8": the range does not start at its first address/);
  });
});
