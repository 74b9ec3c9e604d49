// "The outside" for egress tests: a network namespace made by the test, joined to the host by a
// veth, with a web server on every address it is given (port 8080, answering "hello from
// <address>") and a DNS server on the host's loopback that answers the names it is told.
// The addresses are in 198.18.0.0/15 (benchmarking), which NAT egress refuses unless the daemon
// allows them (ROOST_EGRESS_ALLOW_CIDRS): tests allow what they mean to reach.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';

export interface FakeOutside {
  netns: string;
  hostVeth: string;
  /** The host's end of the veth (x.x.x.1). */
  hostSideAddr: string;
  /** The /24 the outside lives in, e.g. "198.18.37". */
  prefix: string;
  /** The outside's first address (x.x.x.2); `addresses` lists all of them. */
  address: string;
  addresses: string[];
  /** The DNS server's port on 127.0.0.1 (UDP); use as a daemon's dnsServers entry. */
  dnsPort: number;
  /** What a name resolves to (A records); a name not here answers NXDOMAIN. */
  names: Map<string, string>;
  /** Names the DNS server never answers (a slow upstream). */
  unanswered: Set<string>;
  /** How many queries the DNS server answered, per name. */
  queries: Map<string, number>;
  /**
   * Puts `address` (e.g. 169.254.169.254, a cloud's metadata service) into the outside, routed
   * there only for traffic from `fromCidr` (a daemon's sandbox subnet) through a policy-routing
   * rule, so the host's own route to that address stays as it is. Undone by close().
   */
  addRoutedAddress(address: string, fromCidr: string): void;
  close(): Promise<void>;
}

/** Answers A queries from `names` (enough of RFC 1035 for getent and curl); AAAA and others: no data. */
function startDnsServer(names: Map<string, string>, unanswered: Set<string>, queries: Map<string, number>): Promise<Socket> {
  const socket = createSocket('udp4');
  socket.on('message', (query, client) => {
    try {
      const labels: string[] = [];
      let offset = 12;
      while (query[offset]! > 0) {
        labels.push(query.subarray(offset + 1, offset + 1 + query[offset]!).toString());
        offset += 1 + query[offset]!;
      }
      const questionEnd = offset + 5;
      const name = labels.join('.').toLowerCase();
      queries.set(name, (queries.get(name) ?? 0) + 1);
      if (unanswered.has(name)) return;
      const address = names.get(name);
      const isA = query.readUInt16BE(questionEnd - 4) === 1;
      const header = Buffer.from(query.subarray(0, 12));
      header.writeUInt16BE(address === undefined ? 0x8183 : 0x8180, 2); // response; NXDOMAIN or no error
      const answers = isA && address !== undefined ? 1 : 0;
      header.writeUInt16BE(answers, 6);
      header.writeUInt16BE(0, 8);
      header.writeUInt16BE(0, 10);
      const answer = answers ? Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ...address!.split('.').map(Number)]) : Buffer.alloc(0);
      socket.send(Buffer.concat([header, query.subarray(12, questionEnd), answer]), client.port, client.address);
    } catch {
      // a malformed query gets no answer
    }
  });
  return new Promise((resolve) => socket.bind(0, '127.0.0.1', () => resolve(socket)));
}

/** `hosts`: last octets of the outside's addresses in its /24 (default [2]). */
export async function startFakeOutside(opts: { hosts?: number[]; names?: Record<string, string> } = {}): Promise<FakeOutside> {
  const tag = randomBytes(3).toString('hex');
  const netns = `roost-test-out-${tag}`;
  const hostVeth = `rto${tag}`;
  // 198.18.0.0/15 has 512 /24s: a random one keeps parallel tests apart.
  const third = parseInt(tag.slice(0, 4), 16) % 512;
  const prefix = `198.${18 + (third >> 8)}.${third & 255}`;
  const addresses = (opts.hosts ?? [2]).map((host) => `${prefix}.${host}`);
  const hostSideAddr = `${prefix}.1`;
  let web: ChildProcess | undefined;
  let dns: Socket | undefined;
  const routeTable = String(1000 + (parseInt(tag, 16) % 30_000));
  const rules: string[] = [];
  let routed = false;
  // Every step runs even when one fails (a hung test is worse than a failed one); the first failure is thrown.
  const cleanup = async () => {
    let failure: unknown;
    const attempt = (step: () => unknown) => {
      try {
        step();
      } catch (error) {
        failure ??= error;
      }
    };
    for (const from of rules.splice(0)) attempt(() => execFileSync('ip', ['rule', 'del', 'from', from, 'lookup', routeTable]));
    if (routed) attempt(() => execFileSync('ip', ['route', 'flush', 'table', routeTable]));
    attempt(() => web?.kill('SIGKILL'));
    attempt(() => dns?.close());
    attempt(() => execFileSync('ip', ['netns', 'del', netns], { stdio: 'ignore' }));
    if (failure) throw failure;
  };
  execFileSync('ip', ['netns', 'add', netns]);
  try {
    execFileSync('ip', ['link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns]);
    execFileSync('ip', ['addr', 'add', `${hostSideAddr}/24`, 'dev', hostVeth]);
    execFileSync('ip', ['link', 'set', hostVeth, 'up']);
    for (const address of addresses) execFileSync('ip', ['-n', netns, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
    execFileSync('ip', ['-n', netns, 'link', 'set', 'eth0', 'up']);
    execFileSync('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
    web = spawn('ip', ['netns', 'exec', netns, 'python3', '-c', [
      'import http.server, socketserver',
      'class H(http.server.BaseHTTPRequestHandler):',
      '    def do_GET(self):',
      '        body = ("hello from " + self.connection.getsockname()[0] + "\\n").encode()',
      '        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)',
      '    def log_message(self, *a): pass',
      'class S(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True',
      'S(("0.0.0.0", 8080), H).serve_forever()',
    ].join('\n')], { stdio: 'ignore' });
    const names = new Map(Object.entries(opts.names ?? {}));
    const queries = new Map<string, number>();
    const unanswered = new Set<string>();
    dns = await startDnsServer(names, unanswered, queries);
    // The web server is up once its port answers from inside the outside.
    for (let i = 0; ; i++) {
      try {
        execFileSync('ip', ['netns', 'exec', netns, 'python3', '-c', `import socket; socket.create_connection(("${addresses[0]}", 8080), 0.2)`], { stdio: 'ignore' });
        break;
      } catch (error) {
        if (i >= 100) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    const port = dns.address().port;
    const addRoutedAddress = (address: string, fromCidr: string) => {
      execFileSync('ip', ['-n', netns, 'addr', 'add', `${address}/32`, 'dev', 'lo']);
      execFileSync('ip', ['route', 'add', `${address}/32`, 'via', addresses[0]!, 'dev', hostVeth, 'table', routeTable]);
      routed = true;
      if (!rules.includes(fromCidr)) {
        execFileSync('ip', ['rule', 'add', 'from', fromCidr, 'lookup', routeTable]);
        rules.push(fromCidr);
      }
    };
    return {
      netns, hostVeth, hostSideAddr, prefix, address: addresses[0]!, addresses, dnsPort: port, names, unanswered, queries, addRoutedAddress,
      close: cleanup,
    };
  } catch (error) {
    await cleanup();
    throw error;
  }
}
