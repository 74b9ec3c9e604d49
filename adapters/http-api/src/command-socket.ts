// The WebSocket of exec and run: the client's first message is the JSON request, then stdin,
// stdin-end and resize frames come in and the POST's frames go out (contract/src/stream.ts).
//
// Memory stays bounded both ways. Output: each frame waits until the socket took the one before
// (ws's send callback), so a client that does not read slows the process down, as the POST's
// stream does. Input: when the process's stdin pipe is full, the socket is paused (no more reads,
// so TCP pushes back on the client) until the pipe drains; what ws had already read is bounded
// by one socket read. Everything here runs outside fastify: every callback catches its errors.
import type { FastifyBaseLogger } from 'fastify';
import type { WebSocket } from 'ws';
import {
  ClientFrameKind,
  decodeFrameMessage,
  encodeFrame,
  encodeJsonFrame,
  FrameKind,
  maxFramePayloadBytes,
  resizeFrameSchema,
  type ErrorBody,
} from '@roost/contract';
import { RoostError, type ExecSession, type OutputChunk } from '@roost/core';
import { toHttpError } from './errors.js';
import type { FrameSink, SessionFrames } from './stream-response.js';

/** What the first message starts: the session, and for a run its sandbox (the first frame). */
export interface StartedCommand {
  session: ExecSession;
  frames?: SessionFrames;
}

export interface CommandSocketOpts {
  log: FastifyBaseLogger;
  /** A request id for the error bodies and logs. */
  requestId: string;
  /** How long the client may take to send its first message. */
  firstMessageTimeoutMs: number;
  /** Parses the first message and starts the command; throws RoostError to refuse it. */
  start(request: unknown): Promise<StartedCommand>;
  /** Streams the session to the sink (the same code the POST route runs). */
  stream(request: { id: string; log: FastifyBaseLogger }, sink: FrameSink, session: ExecSession, frames?: SessionFrames): Promise<void>;
}

/**
 * stdin bytes roostd may hold for one process past a full pipe before it calls the client
 * broken: after pause() ws still delivers what it had read (one socket read, ≤ 64 KiB), so a
 * well-behaved connection never comes near it.
 */
const maxQueuedStdinBytes = 4 * 1024 * 1024;

export function serveCommandSocket(ws: WebSocket, opts: CommandSocketOpts): void {
  const { log } = opts;
  const sink = new WebSocketFrames(ws);
  let state: 'awaiting-request' | 'starting' | 'running' | 'done' = 'awaiting-request';
  let session: ExecSession | undefined;
  /** Frames that came while the command was being started (bounded: the socket is paused). */
  const early: Buffer[] = [];
  let earlyBytes = 0;
  let lastSize = '';
  let waitingForDrain = false;

  const refuse = (error: unknown) => {
    const httpError = toHttpError(error, opts.requestId);
    if (httpError.internal) log.error({ err: error }, 'command socket failed');
    state = 'done';
    sink.fail(httpError.body);
    session?.cancel('the client broke the protocol');
  };

  const firstDeadline = setTimeout(() => refuse(new RoostError('REQUEST_TIMEOUT', 'no request arrived on the WebSocket in time')), opts.firstMessageTimeoutMs);

  const handleFrame = (data: Buffer) => {
    const frame = decodeFrameMessage(data);
    if (!frame) throw new RoostError('VALIDATION_FAILED', 'each WebSocket message after the request must be one frame (1-byte kind, 4-byte length, payload)');
    const stdin = session!.stdin;
    switch (frame.kind) {
      case ClientFrameKind.stdin: {
        if (!stdin || stdin.writableEnded) return;
        if (stdin.writableLength > maxQueuedStdinBytes) throw new RoostError('VALIDATION_FAILED', 'stdin arrived past the pause');
        if (!stdin.write(frame.payload) && !waitingForDrain) {
          waitingForDrain = true;
          ws.pause();
          const resume = () => {
            waitingForDrain = false;
            stdin.off('drain', resume);
            stdin.off('close', resume);
            if (state === 'running' && ws.readyState === ws.OPEN) ws.resume();
          };
          stdin.on('drain', resume);
          stdin.on('close', resume);
        }
        return;
      }
      case ClientFrameKind.stdinEnd:
        stdin?.end();
        return;
      case ClientFrameKind.resize: {
        let size: { cols: number; rows: number };
        try {
          size = resizeFrameSchema.parse(JSON.parse(Buffer.from(frame.payload).toString('utf8')));
        } catch {
          throw new RoostError('VALIDATION_FAILED', 'a resize frame holds JSON {cols, rows}, each 0 to 65535');
        }
        // Only a change reaches the terminal: a client repeating one size writes nothing.
        const key = `${size.cols}x${size.rows}`;
        if (key !== lastSize) session!.resize?.(size.cols, size.rows);
        lastSize = key;
        return;
      }
      default:
        throw new RoostError('VALIDATION_FAILED', `unknown frame kind ${frame.kind} from the client (stdin 16, stdin-end 17, resize 18)`);
    }
  };

  const begin = async (message: Buffer) => {
    let request: unknown;
    try {
      request = JSON.parse(message.toString('utf8'));
    } catch {
      throw new RoostError('VALIDATION_FAILED', 'the first WebSocket message must be the JSON request');
    }
    const started = await opts.start(request);
    session = started.session;
    if (state === 'done') {
      // The client left while the command was starting.
      session.cancel('client disconnected');
      void session.done.catch(() => {});
      return;
    }
    state = 'running';
    for (const data of early.splice(0)) handleFrame(data);
    earlyBytes = 0;
    if (!waitingForDrain) ws.resume();
    await opts.stream({ id: opts.requestId, log }, sink, session, started.frames);
    state = 'done';
    sink.close();
  };

  ws.on('message', (data: Buffer, isBinary: boolean) => {
    try {
      if (state === 'done') return;
      if (state === 'awaiting-request') {
        clearTimeout(firstDeadline);
        state = 'starting';
        ws.pause();
        begin(isBinary ? data : Buffer.from(data)).catch(refuse);
        return;
      }
      if (!isBinary) throw new RoostError('VALIDATION_FAILED', 'after the request, send binary frames only');
      if (state === 'starting') {
        earlyBytes += data.length;
        if (earlyBytes > maxQueuedStdinBytes) throw new RoostError('VALIDATION_FAILED', 'frames arrived past the pause');
        early.push(data);
        return;
      }
      handleFrame(data);
    } catch (error) {
      refuse(error);
    }
  });
  ws.on('close', () => {
    try {
      clearTimeout(firstDeadline);
      sink.aborted = true;
      if (state !== 'done') session?.cancel('client disconnected; the command was killed');
      state = 'done';
    } catch (error) {
      log.warn({ err: error }, 'stopping a command after its WebSocket closed failed');
    }
  });
  ws.on('error', (error) => log.debug({ err: error.message }, 'command socket error'));
}

/** The POST stream's frames as WebSocket messages, one frame each, with backpressure. */
class WebSocketFrames implements FrameSink {
  aborted = false;

  constructor(private readonly ws: WebSocket) {}

  async output(chunk: OutputChunk): Promise<void> {
    const kind = chunk.stream === 'stdout' ? FrameKind.stdout : FrameKind.stderr;
    for (let offset = 0; offset < chunk.data.length && !this.aborted; offset += maxFramePayloadBytes) {
      await this.send(encodeFrame(kind, chunk.data.subarray(offset, offset + maxFramePayloadBytes)));
    }
  }

  async json(kind: FrameKind, value: unknown): Promise<void> {
    await this.send(encodeJsonFrame(kind, value));
  }

  end(kind: FrameKind, value: unknown): void {
    if (this.aborted || this.ws.readyState !== this.ws.OPEN) return;
    this.ws.send(encodeJsonFrame(kind, value), () => {});
  }

  fail(body: ErrorBody): void {
    this.end(FrameKind.error, body);
    this.close();
  }

  close(): void {
    // Reading again lets the client's close frame in (what still comes is dropped).
    this.ws.resume();
    if (this.ws.readyState === this.ws.OPEN) this.ws.close(1000);
  }

  /** Resolves once the socket took the message (or is gone): the next one waits for it. */
  private send(message: Uint8Array): Promise<void> {
    if (this.aborted || this.ws.readyState !== this.ws.OPEN) return Promise.resolve();
    return new Promise((resolve) => this.ws.send(message, () => resolve()));
  }
}
