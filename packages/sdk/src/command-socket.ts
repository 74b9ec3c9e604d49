// exec and run over a WebSocket, for streamed stdin and terminals: the first message is the JSON
// request, then stdin/stdin-end/resize frames go out and the daemon's frames come in, one frame
// per message. Node only for now: a browser's WebSocket cannot send the Authorization header.
import { ClientFrameKind, encodeFrame, encodeJsonFrame, maxFramePayloadBytes, maxStdinFrameBytes } from '@roost/contract/stream';
import type { WebSocket as WsSocket } from 'ws';
import { errorOfAnswer, errorOfFailedRequest } from './answers.js';

/**
 * What a command reads as stdin: given whole, or streamed from an async iterable (a Node Readable,
 * a web ReadableStream).
 * @example const stdin: StdinSource = process.stdin;
 */
export type StdinSource = string | Uint8Array | AsyncIterable<Uint8Array | string>;

/** The client's half of a command's WebSocket. */
export interface CommandSocket {
  /** The daemon's frames as bytes (one frame per chunk); ends when the socket closes. */
  incoming: AsyncIterable<Uint8Array>;
  /** Sends one frame; resolves once the socket took it (so a fast producer waits). */
  send(kind: ClientFrameKind, payload: Uint8Array): Promise<void>;
  /** Resolves when the socket has closed (the command ended, or was killed). */
  closed: Promise<void>;
  close(): void;
}

/** How much of an answer that is not the upgrade is read to say what it was. */
const maxErrorAnswerBytes = 64 * 1024;

/** Incoming messages held before the socket is paused (the reader is slower than the daemon). */
const maxQueuedMessages = 16;

export async function openCommandSocket(apiUrl: string, path: string, token: string | undefined, request: unknown, signal: AbortSignal): Promise<CommandSocket> {
  // Loaded here, not at the top: `roost run true` and every call without streamed stdin skip it.
  const { WebSocket } = await import('ws');
  const url = new URL(path, apiUrl.replace(/^http/, 'ws'));
  const ws: WsSocket = new WebSocket(url, {
    headers: token ? { authorization: `Bearer ${token}` } : {},
    perMessageDeflate: false,
    maxPayload: maxFramePayloadBytes + 5,
  });
  const onAbort = () => ws.terminate();
  signal.addEventListener('abort', onAbort, { once: true });
  if (signal.aborted) onAbort();

  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_request, response) => {
      // Not the upgrade: roostd refusing it (its error body), or a server that is not roostd.
      // At most the first 64 KiB are read, as for a plain request: an unknown server's page may be endless.
      const chunks: Buffer[] = [];
      let size = 0;
      let settled = false;
      const settle = () => {
        if (settled) return;
        settled = true;
        response.destroy();
        const headers = new Headers();
        for (const [name, value] of Object.entries(response.headers)) {
          if (value !== undefined) headers.set(name, Array.isArray(value) ? value.join(', ') : value);
        }
        const status = response.statusCode ?? 500;
        const answer = new Response(status === 204 || status === 304 ? null : Buffer.concat(chunks), { status: status < 200 ? 500 : status, headers });
        errorOfAnswer(apiUrl, answer).then(reject, reject);
      };
      response.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        size += chunk.length;
        if (size >= maxErrorAnswerBytes) settle();
      });
      response.on('error', () => settle());
      response.on('end', settle);
    });
    ws.once('error', (error) => reject(signal.aborted ? error : errorOfFailedRequest(apiUrl, error)));
  });
  ws.on('error', () => {}); // after open, a failure shows as the close below

  const queue: Uint8Array[] = [];
  let closed = false;
  let wake: (() => void) | undefined;
  const notify = () => {
    wake?.();
    wake = undefined;
  };
  ws.on('message', (data: Buffer) => {
    queue.push(data);
    if (queue.length >= maxQueuedMessages) ws.pause();
    notify();
  });
  let socketClosed!: () => void;
  const closedPromise = new Promise<void>((resolve) => (socketClosed = resolve));
  ws.on('close', () => {
    closed = true;
    socketClosed();
    signal.removeEventListener('abort', onAbort);
    notify();
  });
  ws.send(JSON.stringify(request));

  async function* incoming(): AsyncGenerator<Uint8Array> {
    try {
      for (;;) {
        const next = queue.shift();
        if (next) {
          if (queue.length < maxQueuedMessages / 4 && ws.isPaused) ws.resume();
          yield next;
          continue;
        }
        if (closed) return;
        await new Promise<void>((resolve) => (wake = resolve));
      }
    } finally {
      ws.terminate();
    }
  }

  return {
    incoming: incoming(),
    send: (kind, payload) =>
      new Promise((resolve, reject) => {
        if (ws.readyState !== ws.OPEN) return reject(new Error('the command has ended'));
        ws.send(encodeFrame(kind, payload), (error) => (error ? reject(error) : resolve()));
      }),
    closed: closedPromise,
    close: () => ws.terminate(),
  };
}

/**
 * Sends a source to stdin in frames, then stdin-end. When the command ends first (`ended`), a
 * Node stream source is destroyed so a read that waits (a terminal, a pipe nobody writes) does
 * not keep the program alive.
 */
export async function pumpStdin(socket: Pick<CommandSocket, 'send'>, source: StdinSource, ended: Promise<unknown>): Promise<void> {
  const encoder = new TextEncoder();
  const chunks: AsyncIterable<Uint8Array | string> =
    typeof source === 'string' || source instanceof Uint8Array ? (async function* () { yield source; })() : source;
  let stopped = false;
  const stop = () => {
    stopped = true;
    const stream = source as { destroy?: () => void };
    if (typeof stream.destroy === 'function') stream.destroy();
  };
  ended.then(stop, stop);
  try {
    for await (const chunk of chunks) {
      if (stopped) return;
      const bytes = typeof chunk === 'string' ? encoder.encode(chunk) : chunk;
      for (let offset = 0; offset < bytes.length; offset += maxStdinFrameBytes) {
        await socket.send(ClientFrameKind.stdin, bytes.subarray(offset, offset + maxStdinFrameBytes));
      }
    }
  } catch {
    // The source failed or the socket closed: the command sees EOF, or has ended.
  }
  if (!stopped) await socket.send(ClientFrameKind.stdinEnd, new Uint8Array(0)).catch(() => {});
}

export function resizePayload(cols: number, rows: number): Uint8Array {
  return encodeJsonFrame(ClientFrameKind.resize, { cols, rows }).subarray(5);
}
