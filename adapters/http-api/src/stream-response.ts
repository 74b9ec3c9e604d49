// Writing an exec/run/logs stream to the client with backpressure: when the client reads
// slowly, we stop pulling output, so the process blocks and the daemon's memory stays flat.
import type { ServerResponse } from 'node:http';
import type { FastifyBaseLogger } from 'fastify';
import {
  encodeFrameHeader,
  encodeJsonFrame,
  FrameKind,
  maxFramePayloadBytes,
  streamMediaType,
  type ErrorBody,
} from '@roost/contract';
import type { OutputChunk } from '@roost/core';

/** Where a session's frames go: the POST's response body, or the WebSocket's messages. */
export interface FrameSink {
  /** True once the client went away before the stream ended. */
  aborted: boolean;
  output(chunk: OutputChunk): Promise<void>;
  json(kind: FrameKind, value: unknown): Promise<void>;
  /** The last frame. */
  end(kind: FrameKind, value: unknown): void;
  fail(body: ErrorBody): void;
}

/** A JSON frame (a sandbox, an exit status). */
export interface JsonFrame {
  kind: FrameKind;
  value: unknown;
}

/** Frames a run adds around its output: its sandbox first, the sandbox as the run left it last. */
export interface SessionFrames {
  first?: JsonFrame;
  last?: () => Promise<JsonFrame>;
}

export class StreamResponse implements FrameSink {
  /** True once the client went away before the stream ended. */
  aborted = false;

  constructor(
    private readonly raw: ServerResponse,
    onAbort: () => void,
    log: FastifyBaseLogger,
  ) {
    raw.writeHead(200, { 'content-type': streamMediaType, 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
    // Runs outside the handler's try: onAbort must not throw into the event loop.
    raw.on('close', () => {
      if (raw.writableFinished) return;
      this.aborted = true;
      try {
        onAbort();
      } catch (error) {
        log.warn({ err: error }, 'stopping the stream\'s process after a disconnect failed');
      }
    });
    // A write after the end or on a reset socket is reported here; unheard, it would be fatal.
    raw.on('error', () => {
      this.aborted = true;
    });
  }

  async output(chunk: OutputChunk): Promise<void> {
    const kind = chunk.stream === 'stdout' ? FrameKind.stdout : FrameKind.stderr;
    for (let offset = 0; offset < chunk.data.length; offset += maxFramePayloadBytes) {
      const part = chunk.data.subarray(offset, offset + maxFramePayloadBytes);
      this.raw.cork();
      this.raw.write(encodeFrameHeader(kind, part.length));
      const flushed = this.raw.write(part);
      this.raw.uncork();
      if (!flushed) await this.drained();
    }
  }

  async json(kind: FrameKind, value: unknown): Promise<void> {
    if (!this.raw.write(encodeJsonFrame(kind, value))) await this.drained();
  }

  end(kind: FrameKind, value: unknown): void {
    if (!this.aborted) this.raw.end(encodeJsonFrame(kind, value));
  }

  fail(body: ErrorBody): void {
    this.end(FrameKind.error, body);
  }

  private drained(): Promise<void> {
    if (this.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.raw.off('drain', done);
        this.raw.off('close', done);
        resolve();
      };
      this.raw.on('drain', done);
      this.raw.on('close', done);
    });
  }
}
