// Port forwarding on top of `roost-relay` processes running inside a sandbox: connect() gets a
// plain byte stream (one relay per connection), listen() demultiplexes the framed protocol of
// relay-protocol.ts into one Duplex per accepted connection, with per-connection flow control.
import { Duplex } from 'node:stream';
import type { ProcessHandle, SandboxAddress, SandboxListener } from '@roost/core';
import {
  encodeRelayFrame, RelayFrameDecoder, RELAY_INITIAL_WINDOW, type RelayFrame,
} from './relay-protocol.js';

/** DATA frames the daemon sends are at most this long (the relay accepts up to 64 KiB). */
const DATA_CHUNK = 32 * 1024;
/** Received bytes are acknowledged (WINDOW) in batches of this size. */
const ACK_BATCH = 32 * 1024;
const STOP_GRACE_MS = 2000;

function failure(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/** The relay's last stderr line, without its "roost-relay: " prefix. */
function reasonFrom(stderr: string, fallback: string): string {
  const line = stderr.trim().split('\n').filter(Boolean).pop();
  return line ? line.replace(/^roost-relay: /, '') : fallback;
}

function collectStderr(proc: ProcessHandle, onLine?: (line: string) => void): () => string {
  let text = '';
  let partial = '';
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (chunk: string) => {
    if (text.length < 64 * 1024) text += chunk;
    if (!onLine) return;
    partial += chunk;
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      onLine(partial.slice(0, nl));
      partial = partial.slice(nl + 1);
    }
  });
  return () => text;
}

/**
 * The stream of a `roost-relay connect --ready` process: resolves once the relay reports it is
 * connected, rejects with code CONNECT_FAILED and the relay's reason otherwise.
 */
export function connectedStream(proc: ProcessHandle, what: string): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    let connected = false;
    const stderr = collectStderr(proc, (line) => {
      if (connected || !line.startsWith('connected ')) return;
      connected = true;
      resolve(processStream(proc, stderr));
    });
    proc.wait().then(
      (status) => {
        if (!connected) reject(failure('CONNECT_FAILED', reasonFrom(stderr(), `cannot connect to ${what} (exit ${status.exitCode})`)));
      },
      (error: Error) => reject(failure('CONNECT_FAILED', `cannot connect to ${what}: ${error.message}`)),
    );
  });
}

/** A Duplex over a process's stdin/stdout: end() half-closes, destroy() kills the process. */
function processStream(proc: ProcessHandle, stderr: () => string): Duplex {
  const stdin = proc.stdin!;
  const stdout = proc.stdout;
  let exited = false;
  const stream = new Duplex({
    allowHalfOpen: true,
    read() {
      stdout.resume();
    },
    write(chunk: Buffer, _encoding, callback) {
      stdin.write(chunk, (error) => callback(error ?? null));
    },
    final(callback) {
      stdin.end(callback);
    },
    destroy(error, callback) {
      if (!exited) proc.kill('SIGKILL');
      stdout.destroy();
      callback(error);
    },
  });
  stdout.on('data', (chunk: Buffer) => {
    if (!stream.push(chunk)) stdout.pause();
  });
  stdout.on('end', () => stream.push(null));
  proc.wait().then(
    (status) => {
      exited = true;
      // A reset or a write error after the connect: the relay says which on stderr.
      if (status.exitCode !== 0 && !status.signal && !stream.destroyed) {
        stream.destroy(failure('CONNECTION_LOST', reasonFrom(stderr(), `relay exited with ${status.exitCode}`)));
      }
    },
    () => {
      exited = true;
    },
  );
  return stream;
}

/** One accepted connection of a listening relay. */
class RelayConnection extends Duplex {
  private sendWindow = RELAY_INITIAL_WINDOW;
  private unacked = 0;
  private closedByRelay = false;
  private pendingWrite?: { chunk: Buffer; callback: (error?: Error | null) => void };

  constructor(
    readonly id: number,
    private readonly send: (frame: RelayFrame, onFlushed?: () => void) => void,
    private readonly forget: (id: number) => void,
  ) {
    super({ allowHalfOpen: true, readableHighWaterMark: 64 * 1024 });
  }

  /** DATA from the relay. The window is granted back as the consumer takes the bytes. */
  received(data: Buffer): void {
    this.unacked += data.length;
    if (this.push(data)) this.ack(false);
  }

  private ack(force: boolean): void {
    if (this.unacked === 0 || this.closedByRelay) return;
    if (!force && this.unacked < ACK_BATCH) return;
    this.send({ type: 'window', id: this.id, bytes: this.unacked });
    this.unacked = 0;
  }

  override _read(): void {
    this.ack(true);
  }

  granted(bytes: number): void {
    this.sendWindow += bytes;
    this.pump();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.pendingWrite = { chunk, callback };
    this.pump();
  }

  /** Sends as much of the pending write as the window allows; completes it once the last
   *  piece is in the relay's stdin, so a slow relay slows the writer. */
  private pump(): void {
    const pending = this.pendingWrite;
    if (!pending) return;
    while (pending.chunk.length > 0 && this.sendWindow > 0) {
      const n = Math.min(pending.chunk.length, this.sendWindow, DATA_CHUNK);
      const last = n === pending.chunk.length;
      this.send({ type: 'data', id: this.id, data: pending.chunk.subarray(0, n) }, last ? () => pending.callback() : undefined);
      pending.chunk = pending.chunk.subarray(n);
      this.sendWindow -= n;
      if (last) this.pendingWrite = undefined;
    }
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (this.closedByRelay) return callback();
    this.send({ type: 'eof', id: this.id }, () => callback());
  }

  /** EOF from the relay: the peer sends no more. */
  peerEnded(): void {
    this.push(null);
  }

  /** CLOSE from the relay: the socket is gone. Without a reason both sides had ended (EOF
   *  each way), so the stream ends as usual once its reader has taken what is buffered. */
  relayClosed(reason?: string): void {
    this.closedByRelay = true;
    this.forget(this.id);
    if (reason) this.destroy(failure('CONNECTION_LOST', reason));
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // After EOF both ways the relay closes the socket itself once it has written what it holds;
    // a CLOSE now would abort it and drop that data. CLOSE is for streams cut short.
    const graceful = !error && this.writableFinished && this.readableEnded;
    if (!this.closedByRelay && !graceful) this.send({ type: 'close', id: this.id });
    this.closedByRelay = true;
    this.forget(this.id);
    callback(error);
  }
}

/**
 * Wraps a `roost-relay listen` process: resolves once it listens (LISTENING frame), rejects
 * with code LISTEN_FAILED and the relay's reason when it could not.
 */
export function relayListener(
  proc: ProcessHandle,
  onConnection: (stream: Duplex, peer?: { host: string; port: number }) => void,
  what: string,
): Promise<SandboxListener> {
  const stdin = proc.stdin!;
  const stderr = collectStderr(proc);
  const connections = new Map<number, RelayConnection>();
  const decoder = new RelayFrameDecoder();
  let stopped = false;

  // onFlushed runs once the relay's stdin has room again: how a writer feels backpressure.
  const send = (frame: RelayFrame, onFlushed?: () => void) => {
    if (stopped) return onFlushed?.();
    if (stdin.write(encodeRelayFrame(frame)) || !onFlushed) onFlushed?.();
    else stdin.once('drain', onFlushed);
  };
  const forget = (id: number) => connections.delete(id);

  return new Promise((resolve, reject) => {
    let listening = false;
    const closed = proc.wait().then(
      () => undefined,
      () => undefined,
    );
    closed.then(() => {
      stopped = true;
      // Closed, not failed: an 'error' nobody listens for would take the daemon down, and a
      // listener's end is the caller's doing or the sandbox's (both visible to it elsewhere).
      for (const conn of connections.values()) conn.destroy();
      if (!listening) reject(failure('LISTEN_FAILED', reasonFrom(stderr(), `cannot listen on ${what}`)));
    });

    const close = async () => {
      if (!stopped) {
        // EOF on its stdin: the relay stops listening, drops its connections, removes a
        // unix socket file and exits.
        stdin.end();
        const timer = setTimeout(() => proc.kill('SIGKILL'), STOP_GRACE_MS);
        await closed;
        clearTimeout(timer);
      }
      await closed;
    };

    proc.stdout.on('data', (chunk: Buffer) => {
      let frames: RelayFrame[];
      try {
        frames = decoder.push(chunk);
      } catch {
        proc.kill('SIGKILL');
        return;
      }
      for (const frame of frames) {
        if (frame.type === 'listening') {
          listening = true;
          const address: SandboxAddress = frame.port === 0 ? { path: frame.address } : { host: frame.address, port: frame.port };
          resolve({ address, closed, close });
          continue;
        }
        if (frame.type === 'open') {
          const conn = new RelayConnection(frame.id, send, forget);
          connections.set(frame.id, conn);
          onConnection(conn, frame.port ? { host: frame.address, port: frame.port } : undefined);
          continue;
        }
        const conn = connections.get(frame.id);
        if (!conn) continue; // crossed a CLOSE we sent
        if (frame.type === 'data') conn.received(frame.data);
        else if (frame.type === 'eof') conn.peerEnded();
        else if (frame.type === 'window') conn.granted(frame.bytes);
        else if (frame.type === 'close') conn.relayClosed(frame.reason);
      }
    });
  });
}
