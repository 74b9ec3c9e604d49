// relayListener against frames written straight to a fake relay's stdout: each protocol
// violation stops the relay with one log line and throws nothing out of the stream callback.
// (relay-hostile.test.ts plays the same from inside a real sandbox, with the memory figures.)
import assert from 'node:assert/strict';
import { PassThrough, Writable, type Duplex } from 'node:stream';
import { describe, it, mock } from 'node:test';
import type { ExitStatus, Logger, ProcessHandle } from '@roost/core';
import { encodeRelayFrame, RelayFrameDecoder, RELAY_INITIAL_WINDOW, type RelayFrame } from './relay-protocol.js';
import { connectedStream, RELAY_MAX_CONNECTIONS, relayListener } from './relay-streams.js';

function fakeRelay() {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const received: Buffer[] = [];
  const stdin = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      received.push(chunk);
      callback();
    },
  });
  let exit!: (status: ExitStatus) => void;
  const exited = new Promise<ExitStatus>((resolve) => (exit = resolve));
  const kills: string[] = [];
  const proc: ProcessHandle = {
    stdout, stderr, stdin,
    wait: () => exited,
    kill(signal = 'SIGKILL') {
      kills.push(signal);
      stdout.end();
      stderr.end();
      exit({ exitCode: 137, signal: 'SIGKILL' });
    },
  };
  const warnings: Array<{ msg: string; fields: Record<string, unknown> }> = [];
  const log: Logger = { info() {}, debug() {}, error() {}, warn: (fields, msg) => void warnings.push({ msg, fields }) };
  const send = (...frames: RelayFrame[]) => stdout.write(Buffer.concat(frames.map(encodeRelayFrame)));
  const violations = () => warnings.filter((w) => w.msg === 'relay protocol violation: stopping the relay').map((w) => String(w.fields.reason));
  return { proc, stdout, log, send, kills, received, warnings, violations };
}

const LISTENING: RelayFrame = { type: 'listening', port: 4242, address: '127.0.0.1' };

async function listening(relay: ReturnType<typeof fakeRelay>, onConnection: (stream: Duplex) => void = () => {}) {
  const listener = relayListener(relay.proc, onConnection, 'test', relay.log);
  relay.send(LISTENING);
  return listener;
}

describe('relayListener against a relay that breaks the protocol', () => {
  it('positive control: a well-behaved relay is served and not stopped', async () => {
    const relay = fakeRelay();
    let text = '';
    const listener = await listening(relay, (stream) => stream.on('data', (chunk: Buffer) => (text += chunk.toString())));
    relay.send({ type: 'open', id: 1, port: 5555, address: '10.0.0.9' }, { type: 'data', id: 1, data: Buffer.from('hello') });
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(text, 'hello');
    assert.deepEqual(relay.kills, []);
    assert.deepEqual(relay.violations(), []);
    relay.proc.kill();
    await listener.closed;
  });

  const cases: Array<[string, RelayFrame[], RegExp]> = [
    ['DATA after EOF', [{ type: 'open', id: 1, port: 1, address: 'a' }, { type: 'eof', id: 1 }, { type: 'data', id: 1, data: Buffer.from('x') }], /DATA after EOF/],
    ['an OPEN of an open connection', [{ type: 'open', id: 1, port: 1, address: 'a' }, { type: 'open', id: 1, port: 1, address: 'a' }], /OPEN of connection 1/],
    ['an OPEN of connection 0', [{ type: 'open', id: 0, port: 1, address: 'a' }], /reserved/],
    ['a second LISTENING', [LISTENING], /second LISTENING/],
    ['a WINDOW granting more than was sent', [{ type: 'open', id: 1, port: 1, address: 'a' }, { type: 'window', id: 1, bytes: 1 }], /grants more than was sent/],
  ];
  for (const [what, frames, reason] of cases) {
    it(`${what} stops the relay with one log line`, async () => {
      const relay = fakeRelay();
      const listener = await listening(relay, (stream) => stream.resume());
      relay.send(...frames);
      await listener.closed;
      assert.deepEqual(relay.kills, ['SIGKILL']);
      assert.equal(relay.violations().length, 1);
      assert.match(relay.violations()[0], reason);
    });
  }

  it('an oversized frame length and an unknown frame type stop the relay', async () => {
    for (const header of [[3, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff], [99, 0, 0, 0, 1, 0, 0, 0, 0]]) {
      const relay = fakeRelay();
      const listener = await listening(relay);
      relay.stdout.write(Buffer.from(header));
      await listener.closed;
      assert.match(relay.violations()[0], /exceeds 65536|unknown relay frame type 99/);
    }
  });

  it('frames before a violation in the same chunk still count (LISTENING, then an oversized frame)', async () => {
    const relay = fakeRelay();
    const pending = relayListener(relay.proc, () => {}, 'test', relay.log);
    relay.stdout.write(Buffer.concat([encodeRelayFrame(LISTENING), Buffer.from([3, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff])]));
    const listener = await pending;
    assert.deepEqual(listener.address, { host: '127.0.0.1', port: 4242 });
    await listener.closed;
    assert.match(relay.violations()[0], /exceeds 65536/);
  });

  it('a frame before LISTENING fails the listen', async () => {
    const relay = fakeRelay();
    const listener = relayListener(relay.proc, () => {}, 'test', relay.log);
    relay.send({ type: 'open', id: 1, port: 1, address: 'a' });
    await assert.rejects(listener, { code: 'LISTEN_FAILED' });
    assert.match(relay.violations()[0], /before LISTENING/);
  });

  it('DATA past the window of a connection nobody reads stops the relay', async () => {
    const relay = fakeRelay();
    const listener = await listening(relay);
    relay.send({ type: 'open', id: 1, port: 1, address: 'a' });
    const chunk = Buffer.alloc(32 * 1024);
    // What the stream buffers (64 KiB) is granted back at once; the window counts from there.
    for (let sent = 0; sent <= 2 * RELAY_INITIAL_WINDOW && !relay.kills.length; sent += chunk.length) relay.send({ type: 'data', id: 1, data: chunk });
    await listener.closed;
    assert.match(relay.violations()[0], new RegExp(`the window is ${RELAY_INITIAL_WINDOW}`));
  });

  it('holds at most RELAY_MAX_CONNECTIONS connections and answers the rest with CLOSE', async () => {
    const relay = fakeRelay();
    const held: Duplex[] = [];
    const listener = await listening(relay, (stream) => held.push(stream));
    const extra = 10;
    for (let id = 1; id <= RELAY_MAX_CONNECTIONS + extra; id++) relay.send({ type: 'open', id, port: 1, address: 'a' });
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(held.length, RELAY_MAX_CONNECTIONS);
    // Refusals of one chunk go out together, in one write.
    assert.equal(relay.received.length, 1);
    const closes = new RelayFrameDecoder().push(Buffer.concat(relay.received)).map((frame) => frame.type === 'close' && frame.id);
    assert.deepEqual(closes, Array.from({ length: extra }, (_, i) => RELAY_MAX_CONNECTIONS + 1 + i));
    assert.deepEqual(relay.kills, [], 'refusing is not a violation');
    relay.proc.kill();
    await listener.closed;
    assert.ok(relay.warnings.some((w) => w.msg === 'relay connections refused over the cap' && w.fields.refused === extra));
    assert.ok(held.every((stream) => stream.destroyed));
  });

  it('a CLOSE with a reason on a stream nobody listens to for errors does not crash', async () => {
    const relay = fakeRelay();
    let stream: Duplex | undefined;
    const listener = await listening(relay, (s) => (stream = s));
    relay.send({ type: 'open', id: 1, port: 1, address: 'a' }, { type: 'close', id: 1, reason: 'read: Connection reset by peer' });
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal((stream?.errored as (Error & { code?: string }) | null)?.code, 'CONNECTION_LOST');
    relay.proc.kill();
    await listener.closed;
  });

  it('a connection handler that throws loses its connection, not the daemon', async () => {
    const relay = fakeRelay();
    const errors: string[] = [];
    relay.log.error = (fields) => void errors.push(String(fields.error));
    let stream: Duplex | undefined;
    const listener = await listening(relay, (s) => {
      stream = s;
      throw new Error('handler bug');
    });
    relay.send({ type: 'open', id: 1, port: 1, address: 'a' });
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(errors, ['handler bug']);
    assert.ok(stream?.destroyed);
    assert.deepEqual(relay.kills, []);
    relay.proc.kill();
    await listener.closed;
  });

  it('a relay that never says LISTENING is stopped after 10 s, and a connect that never connects after 75 s', async () => {
    mock.timers.enable({ apis: ['setTimeout'] });
    try {
      const listen = fakeRelay();
      const pending = relayListener(listen.proc, () => {}, 'test', listen.log);
      mock.timers.tick(9_999);
      assert.deepEqual(listen.kills, []);
      mock.timers.tick(1);
      await assert.rejects(pending, { code: 'LISTEN_FAILED' });
      assert.match(listen.violations()[0], /no LISTENING frame within 10 s/);

      const connect = fakeRelay();
      const connecting = connectedStream(connect.proc, '10.0.0.9 port 22');
      mock.timers.tick(74_999);
      assert.deepEqual(connect.kills, []);
      mock.timers.tick(1);
      await assert.rejects(connecting, { code: 'CONNECT_FAILED', message: 'connect to 10.0.0.9 port 22 timed out after 75 s' });
    } finally {
      mock.timers.reset();
    }
  });
});
