// The resolver NAT sandboxes use: listens on the bridge's gateway address, port 53, and relays
// each query to the host's upstream resolvers (which may be on the host's loopback, where a
// sandbox could never reach them itself). UDP and TCP; no cache, no rewriting.
import { createSocket, type Socket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import type { Logger } from '@roost/core';

export interface Upstream {
  host: string;
  port: number;
}

const queryTimeoutMs = 4000;

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

export class DnsForwarder {
  private udp?: Socket;
  private tcp?: Server;
  private readonly connections = new Set<import('node:net').Socket>();

  constructor(
    private readonly upstreams: Upstream[],
    private readonly logger: Logger,
  ) {}

  async listen(address: string): Promise<void> {
    if (this.upstreams.length === 0) {
      this.logger.warn({}, 'DNS for NAT sandboxes: no upstream resolver (none in /etc/resolv.conf, none configured)');
    }
    const udp = createSocket('udp4');
    udp.on('message', (query, client) => this.relayUdp(query, client.address, client.port, 0));
    udp.on('error', (error) => this.logger.error({ err: error.message }, 'DNS forwarder (udp) failed'));
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(53, address, () => resolve());
    });
    this.udp = udp;
    const tcp = createServer((client) => {
      this.connections.add(client);
      client.once('close', () => this.connections.delete(client));
      this.relayTcp(client, 0);
    });
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', reject);
      tcp.listen(53, address, () => resolve());
    });
    this.tcp = tcp;
    this.logger.info({ address, upstreams: this.upstreams }, 'DNS forwarder for NAT sandboxes listening');
  }

  /** One socket per query keeps answers apart without rewriting ids; the next upstream on timeout. */
  private relayUdp(query: Buffer, clientHost: string, clientPort: number, index: number): void {
    const upstream = this.upstreams[index];
    if (!upstream) return;
    const socket = createSocket(upstream.host.includes(':') ? 'udp6' : 'udp4');
    const timer = setTimeout(() => {
      socket.close();
      this.relayUdp(query, clientHost, clientPort, index + 1);
    }, queryTimeoutMs);
    socket.on('error', () => {
      clearTimeout(timer);
      socket.close();
      this.relayUdp(query, clientHost, clientPort, index + 1);
    });
    socket.once('message', (answer) => {
      clearTimeout(timer);
      socket.close();
      this.udp?.send(answer, clientPort, clientHost);
    });
    socket.send(query, upstream.port, upstream.host);
  }

  private relayTcp(client: import('node:net').Socket, index: number): void {
    const upstream = this.upstreams[index];
    if (!upstream) {
      client.destroy();
      return;
    }
    const server = connect({ host: upstream.host, port: upstream.port, timeout: queryTimeoutMs });
    server.once('connect', () => {
      server.setTimeout(0);
      client.pipe(server).pipe(client);
    });
    server.once('timeout', () => server.destroy(new Error('timeout')));
    server.once('error', () => {
      if (server.bytesWritten === 0) this.relayTcp(client, index + 1);
      else client.destroy();
    });
    client.once('error', () => server.destroy());
    client.once('close', () => server.destroy());
  }

  async close(): Promise<void> {
    this.udp?.close();
    for (const client of this.connections) client.destroy();
    await new Promise<void>((resolve) => (this.tcp ? this.tcp.close(() => resolve()) : resolve()));
  }
}
