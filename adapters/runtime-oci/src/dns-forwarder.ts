// The resolver NAT sandboxes use: listens on the bridge's gateway address, port 53, and relays
// each query to the host's upstream resolvers (which may be on the host's loopback, where a
// sandbox could never reach them itself). UDP and TCP; no cache.
//
// A sandbox is hostile until proven otherwise, so everything it can make roostd hold is bounded
// (DnsLimits): TCP connections per sandbox and in total, the size of a query, the time a
// connection may stay idle or take to send one query, one query at a time per connection, and
// the UDP queries waiting for an upstream, per sandbox and in total. Past a bound, a connection
// is closed or a datagram dropped, as a busy resolver would. Every socket and timer callback
// catches its own errors: nothing a sandbox sends can throw out of the event loop.
//
// A policy (per sandbox, see egress rules) may refuse a name (NXDOMAIN) and learns the
// addresses of every answer it let through before the answer goes back to the sandbox.
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '@roost/core';
import { answers, DnsFormatError, errorAnswer, RCODE_NXDOMAIN, readAddressRecords, readQuestion, type AddressRecord } from './dns-message.js';

export interface Upstream {
  host: string;
  port: number;
}

export interface DnsLimits {
  /** TCP connections one sandbox (source address) may hold open. */
  tcpConnectionsPerSandbox: number;
  /** TCP connections of all sandboxes together. */
  tcpConnectionsTotal: number;
  /** A TCP connection with no query in progress is closed after this long. */
  tcpIdleMs: number;
  /** A query over TCP must arrive whole within this long of its first byte (no trickling). */
  tcpQueryDeadlineMs: number;
  /** Longest query accepted (bytes); real queries are under 300. Longer: the connection is closed. */
  maxQueryBytes: number;
  /** Longest answer relayed from an upstream over TCP (the protocol's most is 65535). */
  maxAnswerBytes: number;
  /** UDP queries of one sandbox waiting for an upstream; more are dropped. */
  pendingUdpPerSandbox: number;
  /** UDP queries of all sandboxes waiting for an upstream. */
  pendingUdpTotal: number;
  /** How long one upstream gets to answer before the next is asked. */
  upstreamTimeoutMs: number;
}

export const DEFAULT_DNS_LIMITS: DnsLimits = {
  tcpConnectionsPerSandbox: 8,
  tcpConnectionsTotal: 256,
  tcpIdleMs: 10_000,
  tcpQueryDeadlineMs: 5_000,
  maxQueryBytes: 1_024,
  maxAnswerBytes: 65_535,
  pendingUdpPerSandbox: 64,
  pendingUdpTotal: 1_024,
  upstreamTimeoutMs: 4_000,
};

/** What a sandbox's egress rules say about DNS (egress.ts makes one per sandbox with rules). */
export interface DnsPolicy {
  /** false: the name gets NXDOMAIN and no upstream is asked. */
  allows(name: string): boolean;
  /** Called with the A records of every answer to an allowed name, awaited before the answer is sent. */
  learned(name: string, records: AddressRecord[]): Promise<void>;
}

/** "1.2.3.4", "1.2.3.4:5353", "[::1]:53"; empty list: the nameservers of /etc/resolv.conf. */
export function parseUpstreams(servers: string[], resolvConf = '/etc/resolv.conf'): Upstream[] {
  const list = servers.length > 0 ? servers : readNameservers(resolvConf);
  return list.map((server) => {
    const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(server);
    if (bracketed) return { host: bracketed[1]!, port: Number(bracketed[2] ?? 53) };
    const hostPort = /^([^:]+):(\d+)$/.exec(server);
    if (hostPort) return { host: hostPort[1]!, port: Number(hostPort[2]) };
    return { host: server, port: 53 };
  });
}

function readNameservers(file: string): string[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return [...text.matchAll(/^\s*nameserver\s+(\S+)/gm)].map((m) => m[1]!);
}

/** How many of something each sandbox (source address) holds, with a total. */
class Counter {
  private readonly bySandbox = new Map<string, number>();
  total = 0;
  of(sandbox: string): number {
    return this.bySandbox.get(sandbox) ?? 0;
  }
  add(sandbox: string): void {
    this.bySandbox.set(sandbox, this.of(sandbox) + 1);
    this.total++;
  }
  remove(sandbox: string): void {
    const left = this.of(sandbox) - 1;
    if (left > 0) this.bySandbox.set(sandbox, left);
    else this.bySandbox.delete(sandbox);
    this.total--;
  }
}

export interface DnsForwarderStats {
  tcpConnections: number;
  pendingUdp: number;
  refusedConnections: number;
  droppedQueries: number;
}

export class DnsForwarder {
  private udp?: UdpSocket;
  private tcp?: Server;
  private readonly connections = new Set<Socket>();
  private readonly tcpCount = new Counter();
  private readonly udpPending = new Counter();
  private readonly limits: DnsLimits;
  private refusedConnections = 0;
  private droppedQueries = 0;
  private closed = false;

  constructor(
    private readonly upstreams: Upstream[],
    private readonly logger: Logger,
    limits: Partial<DnsLimits> = {},
    /** The egress policy of the sandbox at a source address, if it has one. */
    private readonly policyOf: (sandboxAddress: string) => DnsPolicy | undefined = () => undefined,
  ) {
    this.limits = { ...DEFAULT_DNS_LIMITS, ...limits };
  }

  stats(): DnsForwarderStats {
    return { tcpConnections: this.tcpCount.total, pendingUdp: this.udpPending.total, refusedConnections: this.refusedConnections, droppedQueries: this.droppedQueries };
  }

  /** `port`: 53 for sandboxes; tests pick a free one. Resolves with the port. */
  async listen(address: string, port = 53): Promise<number> {
    if (this.upstreams.length === 0) {
      this.logger.warn({}, 'DNS for NAT sandboxes: no upstream resolver (none in /etc/resolv.conf, none configured)');
    }
    const udp = createSocket('udp4');
    udp.on('message', (query, client) => this.guard('udp query', () => this.onUdpQuery(query, client)));
    udp.on('error', (error) => this.logger.error({ err: error.message }, 'DNS forwarder (udp) failed'));
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(port, address, () => resolve());
    });
    this.udp = udp;
    const tcp = createServer((client) => this.guard('tcp connection', () => this.onTcpConnection(client)));
    tcp.on('error', (error) => this.logger.error({ err: error.message }, 'DNS forwarder (tcp) failed'));
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', reject);
      tcp.listen(udp.address().port, address, () => resolve());
    });
    this.tcp = tcp;
    this.logger.info({ address, upstreams: this.upstreams, limits: this.limits }, 'DNS forwarder for NAT sandboxes listening');
    return udp.address().port;
  }

  /** Runs a callback of a socket or timer: an error in it is logged, never thrown into the loop. */
  private guard(what: string, fn: () => void): void {
    try {
      fn();
    } catch (error) {
      this.logger.error({ err: (error as Error).message, what }, 'DNS forwarder: callback failed');
    }
  }

  private onUdpQuery(query: Buffer, client: RemoteInfo): void {
    const sandbox = client.address;
    const { limits } = this;
    if (query.length > limits.maxQueryBytes || this.udpPending.of(sandbox) >= limits.pendingUdpPerSandbox || this.udpPending.total >= limits.pendingUdpTotal) {
      this.droppedQueries++;
      return;
    }
    this.udpPending.add(sandbox);
    this.answer(query, sandbox, 'udp')
      .then((answer) => {
        if (answer && !this.closed) this.udp?.send(answer, client.port, client.address, () => {});
      })
      .catch((error: unknown) => this.logger.debug({ err: (error as Error).message }, 'DNS forwarder: udp query failed'))
      .finally(() => this.udpPending.remove(sandbox));
  }

  private onTcpConnection(client: Socket): void {
    const sandbox = client.remoteAddress ?? '';
    client.on('error', () => client.destroy());
    const { limits } = this;
    if (this.closed || this.tcpCount.of(sandbox) >= limits.tcpConnectionsPerSandbox || this.tcpCount.total >= limits.tcpConnectionsTotal) {
      this.refusedConnections++;
      client.resetAndDestroy();
      return;
    }
    this.tcpCount.add(sandbox);
    this.connections.add(client);
    let buffered: Buffer = Buffer.alloc(0);
    let queryTimer: NodeJS.Timeout | undefined;
    let busy = false;
    client.setTimeout(limits.tcpIdleMs, () => client.destroy());
    client.once('close', () => {
      clearTimeout(queryTimer);
      this.connections.delete(client);
      this.tcpCount.remove(sandbox);
    });
    const next = (): void => {
      // One query at a time: no reading while one is answered, so a sandbox cannot queue work.
      if (buffered.length < 2) return;
      const length = buffered.readUInt16BE(0);
      if (length === 0 || length > limits.maxQueryBytes) {
        client.destroy();
        return;
      }
      if (buffered.length < 2 + length) return;
      const query = Buffer.from(buffered.subarray(2, 2 + length));
      buffered = buffered.subarray(2 + length);
      clearTimeout(queryTimer);
      queryTimer = undefined;
      busy = true;
      client.pause();
      this.answer(query, sandbox, 'tcp')
        .then((answer) => {
          if (!answer) {
            client.destroy();
            return;
          }
          const framed = Buffer.alloc(2 + answer.length);
          framed.writeUInt16BE(answer.length, 0);
          answer.copy(framed, 2);
          client.write(framed);
          busy = false;
          client.resume();
          this.guard('tcp next query', next);
        })
        .catch(() => client.destroy());
    };
    client.on('data', (chunk: Buffer) =>
      this.guard('tcp data', () => {
        // At most one query (plus its prefix) is ever held; anything longer closed the connection above.
        if (buffered.length + chunk.length > 2 + limits.maxQueryBytes + (busy ? 0 : limits.maxQueryBytes)) {
          client.destroy();
          return;
        }
        buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
        queryTimer ??= setTimeout(() => client.destroy(), limits.tcpQueryDeadlineMs);
        if (!busy) next();
      }),
    );
  }

  /** The answer to send back, or undefined when no upstream answered. */
  private async answer(query: Buffer, sandbox: string, transport: 'udp' | 'tcp'): Promise<Buffer | undefined> {
    let question;
    try {
      question = readQuestion(query);
    } catch (error) {
      if (error instanceof DnsFormatError) return undefined;
      throw error;
    }
    const policy = this.policyOf(sandbox);
    if (policy && !policy.allows(question.name)) return errorAnswer(query, question, RCODE_NXDOMAIN);
    for (const upstream of this.upstreams) {
      if (this.closed) return undefined;
      // Over UDP first, whatever the sandbox used (some upstreams answer only UDP); a truncated
      // answer is asked again over TCP when the sandbox came over TCP (a UDP client retries itself).
      let answer = await this.askUdp(query, upstream);
      if (answer && transport === 'tcp' && answer[2]! & 0x02) answer = await this.askTcp(query, upstream);
      if (!answer) continue;
      if (policy) {
        let records: AddressRecord[];
        try {
          records = readAddressRecords(answer);
        } catch {
          // An answer we cannot read could carry addresses we would not learn: refuse it.
          return errorAnswer(query, question, RCODE_NXDOMAIN);
        }
        await policy.learned(question.name, records);
      }
      return answer;
    }
    return undefined;
  }

  /** One socket per query keeps answers apart without rewriting ids. */
  private askUdp(query: Buffer, upstream: Upstream): Promise<Buffer | undefined> {
    return new Promise((resolve) => {
      const socket = createSocket(upstream.host.includes(':') ? 'udp6' : 'udp4');
      const done = (answer?: Buffer) => {
        clearTimeout(timer);
        socket.removeAllListeners('message');
        try {
          socket.close();
        } catch {
          // already closed
        }
        resolve(answer);
      };
      const timer = setTimeout(() => done(), this.limits.upstreamTimeoutMs);
      socket.on('error', () => done());
      socket.on('message', (answer) => {
        if (answers(query, answer)) done(answer);
      });
      socket.send(query, upstream.port, upstream.host, (error) => error && done());
    });
  }

  private askTcp(query: Buffer, upstream: Upstream): Promise<Buffer | undefined> {
    return new Promise((resolve) => {
      const server = connect({ host: upstream.host, port: upstream.port });
      let buffered: Buffer = Buffer.alloc(0);
      const done = (answer?: Buffer) => {
        clearTimeout(timer);
        server.destroy();
        resolve(answer);
      };
      const timer = setTimeout(() => done(), this.limits.upstreamTimeoutMs);
      server.on('error', () => done());
      server.on('close', () => done());
      server.once('connect', () => {
        const framed = Buffer.alloc(2 + query.length);
        framed.writeUInt16BE(query.length, 0);
        query.copy(framed, 2);
        server.write(framed);
      });
      server.on('data', (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        if (buffered.length > 2 + this.limits.maxAnswerBytes) return done();
        if (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
          const answer = buffered.subarray(2, 2 + buffered.readUInt16BE(0));
          done(answers(query, answer) ? Buffer.from(answer) : undefined);
        }
      });
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.udp?.close();
    for (const client of this.connections) client.destroy();
    await new Promise<void>((resolve) => (this.tcp ? this.tcp.close(() => resolve()) : resolve()));
  }
}
