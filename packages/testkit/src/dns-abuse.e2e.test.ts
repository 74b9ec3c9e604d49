// A hostile process inside a NAT sandbox against the DNS forwarder roostd runs on the gateway:
// many TCP connections, an oversized length prefix, a trickled query, a UDP flood of queries an
// upstream never answers. roostd stays up, holds no more than its bounds, its RSS stays near
// where it was, and a normal lookup still works afterwards.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { CommandHandle } from '@roost/sdk';
import { DEFAULT_DNS_LIMITS } from '@roost/runtime-oci';
import { startFakeOutside, type FakeOutside } from './outside.js';
import { collectOutput } from './test-deps.js';
import { startDaemon, type TestDaemon } from './start-daemon.js';

const hostile = String.raw`
import socket, struct, time
gateway = open('/etc/resolv.conf').read().split()[1]

def query(name, ident):
    labels = b''.join(bytes([len(p)]) + p.encode() for p in name.split('.'))
    return struct.pack('>HHHHHH', ident, 0x0100, 1, 0, 0, 0) + labels + b'\x00\x00\x01\x00\x01'

def closed_by_peer(s, wait_s):
    s.settimeout(wait_s)
    try:
        return s.recv(1) == b''
    except socket.timeout:
        return False
    except OSError:
        return True

# 1. Many TCP connections, kept open: how many does the forwarder keep?
held = []
for i in range(400):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((gateway, 53))
        held.append(s)
    except OSError:
        pass
kept = sum(1 for s in held if not closed_by_peer(s, 0.01 if held.index(s) else 1.0))
print('tcp-opened', len(held))
print('tcp-kept', kept)
for s in held:
    s.close()
time.sleep(0.5)

# 2. A length prefix announcing 65535 bytes, then a little of it.
s = socket.create_connection((gateway, 53))
s.sendall(b'\xff\xff' + b'a' * 1000)
print('oversized', 'closed' if closed_by_peer(s, 3) else 'open')
s.close()

# 3. A query trickled one byte at a time.
s = socket.create_connection((gateway, 53))
q = query('outside.test', 7)
s.sendall(struct.pack('>H', len(q)))
start = time.time()
closed = False
for b in q * 40:
    try:
        s.sendall(bytes([b]))
    except OSError:
        closed = True
        break
    if closed_by_peer(s, 0.5):
        closed = True
        break
print('trickle', 'closed' if closed else 'open', 'after-s', round(time.time() - start))
s.close()

# 4. A UDP flood of queries the upstream never answers.
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(20000):
    u.sendto(query('slow.test', i & 0xffff), (gateway, 53))
print('udp-sent', 20000)
`;

describe('DNS forwarder against a hostile sandbox', () => {
  let outside: FakeOutside;
  let daemon: TestDaemon;

  before(async () => {
    outside = await startFakeOutside();
    outside.names.set('outside.test', outside.address);
    outside.unanswered.add('slow.test');
    daemon = await startDaemon({
      driver: 'oci',
      config: { network: { allowNat: true, dnsServers: [`127.0.0.1:${outside.dnsPort}`], egressAllowCidrs: [`${outside.prefix}.0/24`] } },
    });
  });

  after(async () => {
    await daemon?.close();
    await outside?.close();
  });

  it('keeps roostd up and bounded, and answers a normal lookup afterwards', { timeout: 120_000 }, async (t) => {
    const sandbox = await daemon.sdk.sandboxes.create({ name: 'hostile', network: 'nat' });
    // Positive control: the forwarder answers this sandbox.
    const before = await collectOutput(sandbox.exec(['getent', 'hosts', 'outside.test']));
    assert.match(before.stdout, new RegExp(`^${outside.address.replaceAll('.', '\\.')}\\s+outside\\.test\\n$`));
    global.gc?.();
    const rssBefore = process.memoryUsage().rss;

    const attack = await collectOutput(sandbox.exec(['python3', '-c', hostile]));
    assert.equal(attack.stderr, '');
    const report = Object.fromEntries(attack.stdout.trim().split('\n').map((line) => [line.split(' ')[0], line.split(' ').slice(1).join(' ')]));
    assert.ok(Number(report['tcp-opened']) >= DEFAULT_DNS_LIMITS.tcpConnectionsPerSandbox, attack.stdout);
    assert.equal(Number(report['tcp-kept']), DEFAULT_DNS_LIMITS.tcpConnectionsPerSandbox, attack.stdout);
    assert.equal(report.oversized, 'closed');
    const trickle = /^closed after-s (\d+)$/.exec(report.trickle ?? '');
    assert.ok(trickle && Number(trickle[1]) <= DEFAULT_DNS_LIMITS.tcpQueryDeadlineMs / 1000 + 2, `trickle: ${report.trickle}`);
    assert.equal(report['udp-sent'], '20000');
    // The upstream saw at most the pending bound of the flood while it lasted.
    assert.ok((outside.queries.get('slow.test') ?? 0) <= DEFAULT_DNS_LIMITS.pendingUdpPerSandbox * 4, `upstream saw ${outside.queries.get('slow.test')}`);

    const health = await fetch(`${daemon.url}/healthz`);
    assert.equal(health.status, 200);
    const growthMb = (process.memoryUsage().rss - rssBefore) / 1024 / 1024;
    t.diagnostic(`hostile sandbox: ${attack.stdout.trim().replaceAll('\n', ', ')}; upstream saw ${outside.queries.get('slow.test') ?? 0} flood queries; RSS +${growthMb.toFixed(1)} MB`);
    assert.ok(growthMb < 64, `roostd's RSS grew by ${growthMb.toFixed(1)} MB`);

    // Once the flood's queries have timed out, the same sandbox resolves again.
    let lookup = '';
    for (let i = 0; i < 40; i++) {
      lookup = (await collectOutput(sandbox.exec(['getent', 'hosts', 'outside.test']))).stdout;
      if (lookup) break;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    assert.match(lookup, new RegExp(`^${outside.address.replaceAll('.', '\\.')}\\s+outside\\.test\\n$`));
    await sandbox.remove();
  });
});
