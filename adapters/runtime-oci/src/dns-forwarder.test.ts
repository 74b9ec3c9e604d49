// The DNS forwarder's bounds on loopback (no sandbox): what a hostile client can make it hold.
// The end-to-end version, from inside a NAT sandbox, is packages/testkit/src/dns-abuse.e2e.test.ts.
import assert from 'node:assert/strict';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { connect, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { Logger } from '@roost/core';
import { DnsForwarder } from './dns-forwarder.js';
import { errorAnswer, readAddressRecords, readQuestion, RCODE_NXDOMAIN } from './dns-message.js';

const silent: Logger = { debug() {}, info() {}, warn() {}, error() {} } as unknown as Logger;

function query(name: string, id = 0x1234): Buffer {
  const labels = name.split('.').map((label) => Buffer.concat([Buffer.from([label.length]), Buffer.from(label)]));
  const header = Buffer.from([id >> 8, id & 255, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
  return Buffer.concat([header, ...labels, Buffer.from([0, 0, 1, 0, 1])]);
}

/** Upstream on loopback: answers A for every name except "slow.test" (never answered). */
function startUpstream(): Promise<UdpSocket> {
  const socket = createSocket('udp4');
  socket.on('message', (message, client) => {
    const question = readQuestion(message);
    if (question.name === 'slow.test') return;
    const header = Buffer.from(message.subarray(0, 12));
    header.writeUInt16BE(0x8180, 2);
    header.writeUInt16BE(1, 6);
    const record = Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 203, 0, 113, 7]);
    socket.send(Buffer.concat([header, message.subarray(12, question.end), record]), client.port, client.address);
  });
  return new Promise((resolve) => socket.bind(0, '127.0.0.1', () => resolve(socket)));
}

function udpAsk(port: number, message: Buffer, timeoutMs = 2000): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const socket = createSocket('udp4');
    const timer = setTimeout(() => {
      socket.close();
      resolve(undefined);
    }, timeoutMs);
    socket.on('message', (answer) => {
      clearTimeout(timer);
      socket.close();
      resolve(answer);
    });
    socket.send(message, port, '127.0.0.1');
  });
}

function tcpConnect(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port }, () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Resolves when the server closes the socket (or its reset arrives), with how long that took. */
function closedWithin(socket: Socket, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    socket.on('error', () => {});
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

describe('DNS messages', () => {
  it('reads the question and answer records, and makes NXDOMAIN answers', () => {
    const q = query('Example.Test');
    const question = readQuestion(q);
    assert.deepEqual({ name: question.name, type: question.type }, { name: 'example.test', type: 1 });
    const nx = errorAnswer(q, question, RCODE_NXDOMAIN);
    assert.equal(nx[3]! & 0x0f, 3);
    assert.deepEqual(readAddressRecords(nx), []);
  });

  it('refuses malformed names: loops, early ends', () => {
    const loop = Buffer.concat([query('a.test').subarray(0, 12), Buffer.from([0xc0, 0x0c, 0, 1, 0, 1])]);
    assert.throws(() => readQuestion(loop), /loop/);
    assert.throws(() => readQuestion(query('a.test').subarray(0, 15)), /ends early/);
  });
});

describe('DNS forwarder bounds (loopback)', { timeout: 60_000 }, () => {
  let upstream: UdpSocket;
  let forwarder: DnsForwarder;
  let port: number;
  const limits = { tcpConnectionsPerSandbox: 4, tcpConnectionsTotal: 6, tcpIdleMs: 1500, tcpQueryDeadlineMs: 800, pendingUdpPerSandbox: 5, pendingUdpTotal: 8, upstreamTimeoutMs: 1000 };

  before(async () => {
    upstream = await startUpstream();
    forwarder = new DnsForwarder([{ host: '127.0.0.1', port: upstream.address().port }], silent, limits);
    port = await forwarder.listen('127.0.0.1', 0);
  });
  after(async () => {
    await forwarder.close();
    upstream.close();
  });

  it('answers a normal lookup over UDP and TCP (positive control)', async () => {
    const answer = await udpAsk(port, query('ok.test'));
    assert.deepEqual(readAddressRecords(answer!), [{ address: '203.0.113.7', ttlS: 30 }]);
    const socket = await tcpConnect(port);
    const q = query('ok.test');
    const framed = Buffer.concat([Buffer.from([q.length >> 8, q.length & 255]), q]);
    socket.write(framed);
    const reply = await new Promise<Buffer>((resolve) => socket.once('data', resolve));
    assert.deepEqual(readAddressRecords(reply.subarray(2)), [{ address: '203.0.113.7', ttlS: 30 }]);
    socket.destroy();
  });

  it('holds at most the per-sandbox number of TCP connections', async () => {
    const sockets = await Promise.all(Array.from({ length: 10 }, () => tcpConnect(port)));
    const closed = await Promise.all(sockets.map((socket) => closedWithin(socket, 500)));
    assert.equal(closed.filter((c) => !c).length, limits.tcpConnectionsPerSandbox);
    assert.equal(forwarder.stats().tcpConnections, limits.tcpConnectionsPerSandbox);
    for (const socket of sockets) socket.destroy();
    for (let i = 0; i < 50 && forwarder.stats().tcpConnections > 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(forwarder.stats().tcpConnections, 0, 'closed connections are no longer counted');
  });

  it('closes a connection that announces an oversized query, trickles, or idles', async () => {
    const oversized = await tcpConnect(port);
    oversized.write(Buffer.from([0xff, 0xff, 0, 0]));
    assert.equal(await closedWithin(oversized, 500), true, 'oversized length prefix');
    const trickler = await tcpConnect(port);
    const q = query('slowly.test');
    trickler.write(Buffer.from([0, q.length]));
    const drip = setInterval(() => trickler.writable && trickler.write(Buffer.from([0])), 100);
    assert.equal(await closedWithin(trickler, limits.tcpQueryDeadlineMs + 700), true, 'trickled query');
    clearInterval(drip);
    const idle = await tcpConnect(port);
    assert.equal(await closedWithin(idle, limits.tcpIdleMs + 700), true, 'idle connection');
  });

  it('drops UDP queries past the pending bound, and answers again once they are gone', async () => {
    const flood = createSocket('udp4');
    await new Promise<void>((resolve) => flood.bind(0, '127.0.0.1', resolve));
    for (let i = 0; i < 200; i++) flood.send(query('slow.test', i), port, '127.0.0.1');
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(forwarder.stats().pendingUdp, limits.pendingUdpPerSandbox);
    assert.ok(forwarder.stats().droppedQueries >= 195 - limits.pendingUdpPerSandbox);
    flood.close();
    for (let i = 0; i < 40 && forwarder.stats().pendingUdp > 0; i++) await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(forwarder.stats().pendingUdp, 0);
    const answer = await udpAsk(port, query('ok.test'));
    assert.deepEqual(readAddressRecords(answer!), [{ address: '203.0.113.7', ttlS: 30 }]);
  });
});
