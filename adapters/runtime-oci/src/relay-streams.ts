// Port forwarding on top of `roost-relay` processes running inside a sandbox: connect() gets a
// plain byte stream (one relay per connection), listen() demultiplexes the framed protocol of
// relay-protocol.ts into one Duplex per accepted connection, with per-connection flow control.
import { Duplex } from 'node:stream';
import type { Logger, ProcessHandle, SandboxAddress, SandboxListener } from '@roost/core';
import {
  encodeRelayFrame, RelayFrameDecoder, RelayProtocolError, RELAY_INITIAL_WINDOW, type RelayFrame,
} from './relay-protocol.js';

/** DATA frames the daemon sends are at most this long (the relay accepts up to 64 KiB). */
const DATA_CHUNK = 32 * 1024;
/** Received bytes are acknowledged (WINDOW) in batches of this size. */
const ACK_BATCH = 32 * 1024;
const STOP_GRACE_MS = 2000;
/**
 * Connections one listener holds at once. An OPEN past it is answered with CLOSE (the relay
 * drops that socket), so a sandbox that opens thousands of connections to its own forwarded
 * port makes roostd hold at most this many, each with ≤ RELAY_INITIAL_WINDOW + 64 KiB buffered.
 */
export const RELAY_MAX_CONNECTIONS = 256;
/**
 * Bytes waiting in the relay's stdin past which it counts as not reading: DATA waits for the
 * pipe to drain, so only control frames (WINDOW, CLOSE) can pile up, and a relay that reads
 * its input keeps that near zero.
 */
export const RELAY_MAX_QUEUED_BYTES = 1024 * 1024;
/** A listen relay that has not said LISTENING by then is stopped (bind is immediate). */
const LISTEN_TIMEOUT_MS = 10_000;
/** A connect relay that has not connected by then is stopped (as BSD's TCP connect timeout). */
const CONNECT_TIMEOUT_MS = 75_000;
/** Longest stderr line kept from a relay; the rest of it is dropped. */
const MAX_STDERR_LINE = 4096;

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
    if (partial.length > MAX_STDERR_LINE) partial = partial.slice(0, MAX_STDERR_LINE);
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
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      proc.kill('SIGKILL');
    }, CONNECT_TIMEOUT_MS);
    timer.unref();
    const stderr = collectStderr(proc, (line) => {
      if (connected || !line.startsWith('connected ')) return;
      connected = true;
      clearTimeout(timer);
      resolve(processStream(proc, stderr));
    });
    proc.wait().then(
      (status) => {
        clearTimeout(timer);
        if (connected) return;
        if (timedOut) reject(failure('CONNECT_FAILED', `connect to ${what} timed out after ${CONNECT_TIMEOUT_MS / 1000} s`));
        else reject(failure('CONNECT_FAILED', reasonFrom(stderr(), `cannot connect to ${what} (exit ${status.exitCode})`)));
      },
      (error: Error) => {
        clearTimeout(timer);
        reject(failure('CONNECT_FAILED', `cannot connect to ${what}: ${error.message}`));
      },
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
  // The caller learns of a lost connection from 'close' and `errored` even without its own
  // 'error' listener: an unheard 'error' would take roostd down.
  stream.on('error', () => {});
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

/** How a RelayConnection reaches the relay: shared by all connections of one listener. */
interface RelayLink {
  send(frame: RelayFrame, onFlushed?: () => void): void;
  /** Whether the relay's stdin has room: DATA waits for a drain otherwise. */
  writable(): boolean;
  /** Calls pump() of a connection once the relay's stdin drains. */
  waitForDrain(conn: RelayConnection): void;
  forget(id: number): void;
}

/** One accepted connection of a listening relay. */
class RelayConnection extends Duplex {
  private sendWindow = RELAY_INITIAL_WINDOW;
  private unacked = 0;
  private closedByRelay = false;
  private endedByRelay = false;
  private pendingWrite?: { chunk: Buffer; callback: (error?: Error | null) => void };

  constructor(
    readonly id: number,
    private readonly link: RelayLink,
  ) {
    super({ allowHalfOpen: true, readableHighWaterMark: 64 * 1024 });
  }

  /** DATA from the relay. The window is granted back as the consumer takes the bytes. */
  received(data: Buffer): void {
    if (this.endedByRelay) throw new RelayProtocolError(`DATA after EOF on connection ${this.id}`);
    // The relay may have at most RELAY_INITIAL_WINDOW unacknowledged: past it, it ignores the
    // window, and holding what it sends would let it grow roostd's memory without end.
    if (this.unacked + data.length > RELAY_INITIAL_WINDOW) {
      throw new RelayProtocolError(`connection ${this.id}: ${this.unacked + data.length} bytes unacknowledged, the window is ${RELAY_INITIAL_WINDOW}`);
    }
    this.unacked += data.length;
    if (this.push(data)) this.ack(false);
  }

  private ack(force: boolean): void {
    if (this.unacked === 0 || this.closedByRelay) return;
    if (!force && this.unacked < ACK_BATCH) return;
    this.link.send({ type: 'window', id: this.id, bytes: this.unacked });
    this.unacked = 0;
  }

  override _read(): void {
    this.ack(true);
  }

  granted(bytes: number): void {
    // The relay grants back what it wrote to its socket: never more than was sent to it.
    if (this.sendWindow + bytes > RELAY_INITIAL_WINDOW) {
      throw new RelayProtocolError(`connection ${this.id}: WINDOW grants more than was sent`);
    }
    this.sendWindow += bytes;
    this.pump();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.pendingWrite = { chunk, callback };
    this.pump();
  }

  /** Sends as much of the pending write as the window and the relay's stdin allow; completes
   *  it once the last piece is handed over, so a slow relay slows the writer. */
  pump(): void {
    const pending = this.pendingWrite;
    if (!pending) return;
    while (pending.chunk.length > 0 && this.sendWindow > 0) {
      if (!this.link.writable()) {
        this.link.waitForDrain(this);
        return;
      }
      const n = Math.min(pending.chunk.length, this.sendWindow, DATA_CHUNK);
      this.link.send({ type: 'data', id: this.id, data: pending.chunk.subarray(0, n) });
      pending.chunk = pending.chunk.subarray(n);
      this.sendWindow -= n;
    }
    if (pending.chunk.length === 0) {
      this.pendingWrite = undefined;
      pending.callback();
    }
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (this.closedByRelay) return callback();
    this.link.send({ type: 'eof', id: this.id }, () => callback());
  }

  /** EOF from the relay: the peer sends no more. */
  peerEnded(): void {
    this.endedByRelay = true;
    this.push(null);
  }

  /** CLOSE from the relay: the socket is gone. Without a reason both sides had ended (EOF
   *  each way), so the stream ends as usual once its reader has taken what is buffered. */
  relayClosed(reason?: string): void {
    this.closedByRelay = true;
    this.link.forget(this.id);
    if (reason) this.destroy(failure('CONNECTION_LOST', reason));
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // After EOF both ways the relay closes the socket itself once it has written what it holds;
    // a CLOSE now would abort it and drop that data. CLOSE is for streams cut short.
    const graceful = !error && this.writableFinished && this.readableEnded;
    if (!this.closedByRelay && !graceful) this.link.send({ type: 'close', id: this.id });
    this.closedByRelay = true;
    this.link.forget(this.id);
    callback(error);
  }
}

/**
 * Wraps a `roost-relay listen` process: resolves once it listens (LISTENING frame), rejects
 * with code LISTEN_FAILED and the relay's reason when it could not.
 *
 * The relay runs inside the sandbox, so whatever it sends is untrusted: frame lengths,
 * connection counts, windows and its reading of its input are checked here, and a violation
 * stops that relay (one log line) instead of growing roostd's memory or throwing out of a
 * stream callback.
 */
export function relayListener(
  proc: ProcessHandle,
  onConnection: (stream: Duplex, peer?: { host: string; port: number }) => void,
  what: string,
  log: Logger,
): Promise<SandboxListener> {
  const stdin = proc.stdin!;
  const stderr = collectStderr(proc);
  const connections = new Map<number, RelayConnection>();
  const waitingForDrain = new Set<RelayConnection>();
  const decoder = new RelayFrameDecoder();
  let stopped = false;
  let violated = false;
  let refusedOverCap = 0;

  const violation = (reason: string) => {
    if (violated) return;
    violated = true;
    log.warn({ relay: what, reason }, 'relay protocol violation: stopping the relay');
    proc.kill('SIGKILL');
  };

  // Control frames (WINDOW, EOF, CLOSE) of one tick go out in one write: a relay that sends
  // thousands of frames per chunk would otherwise queue thousands of tiny writes, each costing
  // far more memory than its 9 bytes. DATA flushes them first, so the order stays as sent.
  let batch: Buffer[] = [];
  let batchFlushed: Array<() => void> = [];
  const write = (bytes: Buffer, onFlushed: Array<() => void>) => {
    const room = stdin.write(bytes);
    if (onFlushed.length) {
      const done = () => onFlushed.forEach((callback) => callback());
      if (room) done();
      else stdin.once('drain', done);
    }
    if (stdin.writableLength > RELAY_MAX_QUEUED_BYTES) violation(`does not read its input (${stdin.writableLength} bytes waiting)`);
  };
  const flush = () => {
    if (!batch.length) return;
    const bytes = batch.length === 1 ? batch[0] : Buffer.concat(batch);
    const flushed = batchFlushed;
    batch = [];
    batchFlushed = [];
    if (stopped || violated) flushed.forEach((callback) => callback());
    else write(bytes, flushed);
  };

  const link: RelayLink = {
    // onFlushed runs once the relay's stdin has room again.
    send(frame, onFlushed) {
      if (stopped || violated) return onFlushed?.();
      if (frame.type === 'data') {
        flush();
        write(encodeRelayFrame(frame), onFlushed ? [onFlushed] : []);
        return;
      }
      if (!batch.length) queueMicrotask(flush);
      batch.push(encodeRelayFrame(frame));
      if (onFlushed) batchFlushed.push(onFlushed);
    },
    writable: () => !stopped && !violated && !stdin.writableNeedDrain,
    waitForDrain(conn) {
      if (waitingForDrain.size === 0) {
        stdin.once('drain', () => {
          const ready = [...waitingForDrain];
          waitingForDrain.clear();
          for (const c of ready) if (!c.destroyed) c.pump();
        });
      }
      waitingForDrain.add(conn);
    },
    forget(id) {
      const conn = connections.get(id);
      if (conn) waitingForDrain.delete(conn);
      connections.delete(id);
    },
  };

  return new Promise((resolve, reject) => {
    let listening = false;
    const closed = proc.wait().then(
      () => undefined,
      () => undefined,
    );
    const listenTimer = setTimeout(() => violation(`no LISTENING frame within ${LISTEN_TIMEOUT_MS / 1000} s`), LISTEN_TIMEOUT_MS);
    listenTimer.unref();
    closed.then(() => {
      stopped = true;
      clearTimeout(listenTimer);
      // Closed, not failed: an 'error' nobody listens for would take the daemon down, and a
      // listener's end is the caller's doing or the sandbox's (both visible to it elsewhere).
      for (const conn of connections.values()) conn.destroy();
      if (refusedOverCap) log.warn({ relay: what, refused: refusedOverCap, cap: RELAY_MAX_CONNECTIONS }, 'relay connections refused over the cap');
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

    const opened = (id: number, peer?: { host: string; port: number }) => {
      if (id === 0 || connections.has(id)) throw new RelayProtocolError(`OPEN of connection ${id}, which is ${id === 0 ? 'reserved' : 'open'}`);
      if (connections.size >= RELAY_MAX_CONNECTIONS) {
        // The relay accepted a socket roostd will not hold: it closes it on this CLOSE.
        if (refusedOverCap++ === 0) log.warn({ relay: what, cap: RELAY_MAX_CONNECTIONS }, 'relay connections over the cap: refusing new ones');
        link.send({ type: 'close', id });
        return;
      }
      const conn = new RelayConnection(id, link);
      // As in processStream: the consumer may not listen for 'error', and the relay decides
      // when a connection fails.
      conn.on('error', () => {});
      connections.set(id, conn);
      try {
        onConnection(conn, peer);
      } catch (error) {
        log.error({ relay: what, error: (error as Error).message }, 'relay connection handler threw');
        conn.destroy();
      }
    };

    const handle = (frame: RelayFrame) => {
      if (frame.type === 'listening') {
        if (listening) throw new RelayProtocolError('a second LISTENING frame');
        listening = true;
        clearTimeout(listenTimer);
        const address: SandboxAddress = frame.port === 0 ? { path: frame.address } : { host: frame.address, port: frame.port };
        resolve({ address, closed, close });
        return;
      }
      if (!listening) throw new RelayProtocolError(`a ${frame.type} frame before LISTENING`);
      if (frame.type === 'open') return opened(frame.id, frame.port ? { host: frame.address, port: frame.port } : undefined);
      const conn = connections.get(frame.id);
      if (!conn) return; // crossed a CLOSE we sent
      if (frame.type === 'data') conn.received(frame.data);
      else if (frame.type === 'eof') conn.peerEnded();
      else if (frame.type === 'window') conn.granted(frame.bytes);
      else if (frame.type === 'close') conn.relayClosed(frame.reason);
    };

    proc.stdout.on('data', (chunk: Buffer) => {
      if (violated) return;
      try {
        for (const frame of decoder.decode(chunk)) {
          handle(frame);
          if (violated) return;
        }
      } catch (error) {
        violation((error as Error).message);
      }
    });
  });
}
