// Egress end to end: a network namespace made by the test stands in for "the outside", with a
// web server in it and a DNS server on the host's loopback as the upstream resolver. A NAT
// sandbox reaches it by name; a sandbox without NAT reaches nothing; neither reaches the host.
//
// The outside's addresses are non-public (198.18.0.0/15, benchmarking; 169.254.169.25x,
// link-local), which NAT egress refuses by default: the test's daemon allows some of them
// (ROOST_EGRESS_ALLOW_CIDRS), so the same sandbox reaches what is allowed and not the rest.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { CommandHandle } from '@roost/sdk';
import { readInstance } from '@roost/runtime-oci';
import { startFakeOutside, type FakeOutside } from './outside.js';
import { collectOutput } from './test-deps.js';
import { startDaemon, type TestDaemon } from './start-daemon.js';

/** Runs every step, even when one fails, and throws the first failure at the end. */
async function cleanUp(steps: Array<() => unknown>): Promise<void> {
  let first: unknown;
  for (const step of steps) {
    try {
      await step();
    } catch (error) {
      first ??= error;
    }
  }
  if (first) throw first;
}

describe('egress (--network nat) end to end', () => {
  let outside: FakeOutside;
  let daemon: TestDaemon;
  let hostService: Server;
  let hostServicePort: number;
  /** In the outside, but outside the range the daemon allows. */
  let outsideNotAllowed: string;
  /** Link-local, in the outside netns, routed there only for the daemon's sandboxes (policy routing). */
  const linkLocalAllowed = '169.254.169.253';
  const metadataAddr = '169.254.169.254';
  const routeTable = String(1000 + Math.floor(Math.random() * 30_000));
  let sandboxSubnet = '';

  before(async () => {
    outside = await startFakeOutside({ hosts: [2, 130] });
    outside.names.set('outside.test', outside.address);
    outsideNotAllowed = outside.addresses[1]!;
    for (const address of [linkLocalAllowed, metadataAddr]) execFileSync('ip', ['-n', outside.netns, 'addr', 'add', `${address}/32`, 'dev', 'lo']);
    hostService = createServer((socket) => socket.end('host secret\n'));
    await new Promise<void>((resolve) => hostService.listen(0, '0.0.0.0', resolve));
    hostServicePort = (hostService.address() as { port: number }).port;
    daemon = await startDaemon({
      driver: 'oci',
      config: {
        network: {
          allowNat: true,
          dnsServers: [`127.0.0.1:${outside.dnsPort}`],
          egressAllowCidrs: [`${outside.prefix}.0/25`, `${linkLocalAllowed}/32`],
        },
        pool: { size: 1, memoryShare: 0.5 },
      },
    });
    await daemon.daemon.pool!.filled();
    // Only this daemon's sandboxes find the link-local addresses in the outside: the host's own
    // route to 169.254.169.254 (a cloud's metadata service) stays as it is.
    execFileSync('ip', ['route', 'add', '169.254.169.252/30', 'via', outside.address, 'dev', outside.hostVeth, 'table', routeTable]);
    sandboxSubnet = readInstance(`${daemon.dataDir}/runtime`).subnet.text;
    execFileSync('ip', ['rule', 'add', 'from', sandboxSubnet, 'lookup', routeTable]);
  });

  after(() =>
    cleanUp([
      () => sandboxSubnet && execFileSync('ip', ['rule', 'del', 'from', sandboxSubnet, 'lookup', routeTable]),
      () => daemon?.close(),
      () => hostService?.close(),
      () => outside?.close(),
    ]),
  );

  it('a NAT sandbox resolves names and reaches the outside; the API says nat', async () => {
    const sandbox = await daemon.sdk.sandboxes.create({ name: 'with-nat', network: 'nat' });
    assert.equal(sandbox.info.network, 'nat');
    const result = await collectOutput(sandbox.exec(['bash', '-c', 'getent hosts outside.test; curl -sS --max-time 5 http://outside.test:8080/']));
    assert.equal(result.stderr, '');
    const address = outside.address.replaceAll('.', '\\.');
    assert.match(result.stdout, new RegExp(`^${address}\\s+outside\\.test\\nhello from ${address}\\n$`));
    await sandbox.remove();
  });

  it('a sandbox without NAT has no way out and no resolver', async () => {
    const handle = daemon.sdk.run({ script: `curl -sS --max-time 3 http://${outside.address}:8080/; echo "curl=$?"; getent hosts outside.test; echo "getent=$?"` });
    const result = await collectOutput(handle);
    assert.match(result.stdout, /curl=(7|28)\n/);
    assert.match(result.stdout, /getent=2\n/);
    assert.doesNotMatch(result.stdout, /hello from/);
  });

  it('a NAT sandbox still reaches neither the host nor another sandbox', async () => {
    const other = await daemon.sdk.sandboxes.create({ name: 'other-box' });
    const listener = other.exec(['python3', '-c', 'import socket,time\ns=socket.socket(); s.bind(("0.0.0.0", 9000)); s.listen(); time.sleep(60)']);
    const ip = (await collectOutput(other.exec(['hostname', '-i']))).stdout.trim();
    const nat = await daemon.sdk.sandboxes.create({ name: 'nat-probe', network: 'nat' });
    const gateway = /nameserver (\S+)/.exec((await collectOutput(nat.exec(['cat', '/etc/resolv.conf']))).stdout)![1]!;
    const targets = [`${outside.hostSideAddr}:${hostServicePort}`, `${gateway}:${hostServicePort}`, `127.0.0.1:${hostServicePort}`, `${ip}:9000`];
    const probe = targets
      .map((target) => {
        const [host, port] = target.split(':');
        return `if timeout 2 bash -c 'exec 3<>/dev/tcp/${host}/${port}' 2>/dev/null; then echo "${target} open"; else echo "${target} closed"; fi`;
      })
      .join('\n');
    const result = await collectOutput(nat.exec(['bash', '-c', probe]));
    assert.equal(result.stdout, targets.map((target) => `${target} closed\n`).join(''));
    listener.kill();
    await listener.wait().catch(() => {});
    await nat.remove();
    await other.remove();
  });

  it('NAT reaches only public ranges and what the admin allows: allowed first, then refused', async () => {
    // The servers are up and reachable from where they should be (the host; inside the outside).
    const fromHost = execFileSync('curl', ['-sS', '--max-time', '3', `http://${outsideNotAllowed}:8080/`]).toString();
    assert.equal(fromHost, `hello from ${outsideNotAllowed}\n`);
    const fromOutside = execFileSync('ip', ['netns', 'exec', outside.netns, 'curl', '-sS', '--max-time', '3', `http://${metadataAddr}:8080/`]).toString();
    assert.equal(fromOutside, `hello from ${metadataAddr}\n`);

    const sandbox = await daemon.sdk.sandboxes.create({ name: 'nat-ranges', network: 'nat' });
    const fetch = (address: string) => `curl -sS --max-time 3 http://${address}:8080/ 2>/dev/null; echo "${address} curl=$?"`;
    const allowed = await collectOutput(sandbox.exec(['bash', '-c', [outside.address, linkLocalAllowed].map(fetch).join('\n')]));
    assert.equal(allowed.stdout, `hello from ${outside.address}\n${outside.address} curl=0\nhello from ${linkLocalAllowed}\n${linkLocalAllowed} curl=0\n`);
    const refused = await collectOutput(sandbox.exec(['bash', '-c', [outsideNotAllowed, metadataAddr].map(fetch).join('\n')]));
    // 28: the packets were dropped (a timeout), not a missing curl (127) or a refused port (7).
    assert.equal(refused.stdout, `${outsideNotAllowed} curl=28\n${metadataAddr} curl=28\n`);
    const table = readInstance(`${daemon.dataDir}/runtime`).nftTable;
    const rules = execFileSync('nft', ['list', 'chain', 'inet', table, 'forward']).toString();
    assert.match(rules, /packets [1-9]\d* bytes \d+ drop comment "non-public destination"/);
    await sandbox.remove();
  });
});
