// Egress end to end: a network namespace made by the test stands in for "the outside", with a
// web server in it and a DNS server on the host's loopback as the upstream resolver. A NAT
// sandbox reaches it by name; a sandbox without NAT reaches nothing; neither reaches the host.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { createServer, type Server } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { execFileSync } from 'node:child_process';
import type { CommandHandle } from '@roost/sdk';
import { startDaemon, type TestDaemon } from './start-daemon.js';

async function collect(handle: CommandHandle) {
  const out = { stdout: '', stderr: '' };
  for await (const chunk of handle.output()) out[chunk.stream] += Buffer.from(chunk.data).toString();
  return { ...out, exitCode: (await handle.wait()).exitCode };
}

/** Answers every A query with `address` (enough of RFC 1035 for getent and curl). */
function startDnsServer(address: string): Promise<{ socket: Socket; port: number }> {
  const socket = createSocket('udp4');
  socket.on('message', (query, client) => {
    const questionEnd = query.indexOf(0, 12) + 5;
    const header = Buffer.from(query.subarray(0, 12));
    header.writeUInt16BE(0x8180, 2); // response, recursion available, no error
    const isA = query.readUInt16BE(questionEnd - 4) === 1;
    header.writeUInt16BE(isA ? 1 : 0, 6); // answers
    header.writeUInt16BE(0, 8);
    header.writeUInt16BE(0, 10);
    const answer = Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ...address.split('.').map(Number)]);
    socket.send(Buffer.concat([header, query.subarray(12, questionEnd), isA ? answer : Buffer.alloc(0)]), client.port, client.address);
  });
  return new Promise((resolve) => socket.bind(0, '127.0.0.1', () => resolve({ socket, port: socket.address().port })));
}

describe('egress (--network nat) end to end', () => {
  const tag = randomBytes(3).toString('hex');
  const netns = `roost-test-out-${tag}`;
  const hostVeth = `rto${tag}`;
  const subnet = `198.18.${parseInt(tag.slice(0, 2), 16)}`;
  const outsideAddr = `${subnet}.2`;
  const hostSideAddr = `${subnet}.1`;
  let daemon: TestDaemon;
  let dns: { socket: Socket; port: number };
  let web: ChildProcess;
  let hostService: Server;
  let hostServicePort: number;

  before(async () => {
    execFileSync('ip', ['netns', 'add', netns]);
    execFileSync('ip', ['link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns]);
    execFileSync('ip', ['addr', 'add', `${hostSideAddr}/24`, 'dev', hostVeth]);
    execFileSync('ip', ['link', 'set', hostVeth, 'up']);
    execFileSync('ip', ['-n', netns, 'addr', 'add', `${outsideAddr}/24`, 'dev', 'eth0']);
    execFileSync('ip', ['-n', netns, 'link', 'set', 'eth0', 'up']);
    execFileSync('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
    web = spawn('ip', ['netns', 'exec', netns, 'python3', '-c', [
      'import http.server',
      'class H(http.server.BaseHTTPRequestHandler):',
      '    def do_GET(self):',
      '        body = b"hello from outside\\n"',
      '        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)',
      '    def log_message(self, *a): pass',
      `http.server.HTTPServer(("${outsideAddr}", 8080), H).serve_forever()`,
    ].join('\n')], { stdio: 'ignore' });
    dns = await startDnsServer(outsideAddr);
    hostService = createServer((socket) => socket.end('host secret\n'));
    await new Promise<void>((resolve) => hostService.listen(0, '0.0.0.0', resolve));
    hostServicePort = (hostService.address() as { port: number }).port;
    daemon = await startDaemon({
      driver: 'oci',
      config: { network: { allowNat: true, dnsServers: [`127.0.0.1:${dns.port}`] }, pool: { size: 1, memoryShare: 0.5 } },
    });
    await daemon.daemon.pool!.filled();
    // The web server is up once its port answers from the host.
    for (let i = 0; i < 50; i++) {
      try {
        execFileSync('ip', ['netns', 'exec', netns, 'python3', '-c', `import socket; socket.create_connection(("${outsideAddr}", 8080), 0.2)`]);
        break;
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  });

  after(async () => {
    await daemon?.close();
    web?.kill('SIGKILL');
    dns?.socket.close();
    hostService?.close();
    execFileSync('ip', ['netns', 'del', netns]);
  });

  it('a NAT sandbox resolves names and reaches the outside; the API says nat', async () => {
    const sandbox = await daemon.sdk.sandboxes.create({ name: 'with-nat', network: 'nat' });
    assert.equal(sandbox.info.network, 'nat');
    const result = await collect(sandbox.exec(['bash', '-c', 'getent hosts outside.test; curl -sS --max-time 5 http://outside.test:8080/']));
    assert.equal(result.stderr, '');
    assert.match(result.stdout, new RegExp(`^${outsideAddr.replaceAll('.', '\\.')}\\s+outside\\.test\\nhello from outside\\n$`));
    await sandbox.remove();
  });

  it('a sandbox without NAT has no way out and no resolver', async () => {
    const handle = daemon.sdk.run({ script: `curl -sS --max-time 3 http://${outsideAddr}:8080/; echo "curl=$?"; getent hosts outside.test; echo "getent=$?"` });
    const result = await collect(handle);
    assert.match(result.stdout, /curl=(7|28)\n/);
    assert.match(result.stdout, /getent=2\n/);
    assert.doesNotMatch(result.stdout, /hello from outside/);
  });

  it('a NAT sandbox still reaches neither the host nor another sandbox', async () => {
    const other = await daemon.sdk.sandboxes.create({ name: 'other-box' });
    const listener = other.exec(['python3', '-c', 'import socket,time\ns=socket.socket(); s.bind(("0.0.0.0", 9000)); s.listen(); time.sleep(60)']);
    const ip = (await collect(other.exec(['hostname', '-i']))).stdout.trim();
    const nat = await daemon.sdk.sandboxes.create({ name: 'nat-probe', network: 'nat' });
    const targets = [`${hostSideAddr}:${hostServicePort}`, `10.213.0.1:${hostServicePort}`, `127.0.0.1:${hostServicePort}`, `${ip}:9000`];
    const probe = targets
      .map((target) => {
        const [host, port] = target.split(':');
        return `if timeout 2 bash -c 'exec 3<>/dev/tcp/${host}/${port}' 2>/dev/null; then echo "${target} open"; else echo "${target} closed"; fi`;
      })
      .join('\n');
    const result = await collect(nat.exec(['bash', '-c', probe]));
    assert.equal(result.stdout, targets.map((target) => `${target} closed\n`).join(''));
    listener.kill();
    await listener.wait().catch(() => {});
    await nat.remove();
    await other.remove();
  });
});
