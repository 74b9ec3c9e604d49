// The framing of exec, run and logs responses (media type application/vnd.roost.stream).
// Each frame is a 1-byte kind, a 4-byte big-endian payload length, then the payload. Output
// frames carry raw bytes, so binary output passes byte-exact and stdout/stderr stay apart.
//
// The same frames travel over the WebSocket of exec and run (GET + Upgrade on the POST's path),
// one frame per binary message, after a first client message holding the JSON request. The
// client then sends stdin, stdin-end and resize frames; the server sends what the POST streams.

export const streamMediaType = 'application/vnd.roost.stream';

export const FrameKind = {
  stdout: 1,
  stderr: 2,
  /** JSON ExitFrame; the last frame of a finished process. */
  exit: 3,
  /** JSON ErrorBody; the last frame when the server failed after the stream began. */
  error: 4,
  /** JSON Sandbox: the first frame of a run, so the client learns its sandbox, and again just
   *  before the exit frame, as the run left it (its final status). */
  sandbox: 5,
} as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];

/** Frames a client sends on the exec/run WebSocket, after its first message (the JSON request). */
export const ClientFrameKind = {
  /** Raw bytes for the command's stdin. */
  stdin: 16,
  /** No more stdin: the command reads EOF (empty payload). */
  stdinEnd: 17,
  /** JSON {cols, rows}: the terminal's new size (exec with tty only). */
  resize: 18,
} as const;
export type ClientFrameKind = (typeof ClientFrameKind)[keyof typeof ClientFrameKind];

/** stdin is sent in frames of at most this many bytes (well under the server's WebSocket message limit). */
export const maxStdinFrameBytes = 64 * 1024;

export interface Frame {
  kind: FrameKind;
  payload: Uint8Array;
}

const headerBytes = 5;
/** Output is split into frames of at most this size, so a reader never buffers more. */
export const maxFramePayloadBytes = 1 << 20;

/** One whole frame: header and payload in one buffer (a WebSocket message). */
export function encodeFrame(kind: FrameKind | ClientFrameKind, payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(headerBytes + payload.length);
  frame.set(encodeFrameHeader(kind, payload.length), 0);
  frame.set(payload, headerBytes);
  return frame;
}

/** The one frame a WebSocket message holds; undefined when the message is not exactly one frame. */
export function decodeFrameMessage(message: Uint8Array): { kind: number; payload: Uint8Array } | undefined {
  if (message.length < headerBytes) return undefined;
  const view = new DataView(message.buffer, message.byteOffset, headerBytes);
  if (view.getUint32(1) !== message.length - headerBytes) return undefined;
  return { kind: view.getUint8(0), payload: message.subarray(headerBytes) };
}

export function encodeFrameHeader(kind: FrameKind | ClientFrameKind, payloadLength: number): Uint8Array {
  const header = new Uint8Array(headerBytes);
  header[0] = kind;
  new DataView(header.buffer).setUint32(1, payloadLength);
  return header;
}

export function encodeJsonFrame(kind: FrameKind | ClientFrameKind, value: unknown): Uint8Array {
  return encodeFrame(kind, new TextEncoder().encode(JSON.stringify(value)));
}

export function decodeJsonPayload<T>(frame: Frame): T {
  return JSON.parse(new TextDecoder().decode(frame.payload)) as T;
}

/** Splits a byte stream into frames. Throws when the stream ends inside a frame. */
export async function* decodeFrames(chunks: AsyncIterable<Uint8Array>): AsyncGenerator<Frame> {
  let pending: Uint8Array = new Uint8Array(0);
  for await (const chunk of chunks) {
    pending = pending.length === 0 ? chunk : concat(pending, chunk);
    let offset = 0;
    while (pending.length - offset >= headerBytes) {
      const view = new DataView(pending.buffer, pending.byteOffset + offset, headerBytes);
      const kind = view.getUint8(0) as FrameKind;
      const length = view.getUint32(1);
      if (length > maxFramePayloadBytes * 4) throw new Error(`stream frame too large (${length} bytes)`);
      if (pending.length - offset < headerBytes + length) break;
      yield { kind, payload: pending.subarray(offset + headerBytes, offset + headerBytes + length) };
      offset += headerBytes + length;
    }
    pending = offset === pending.length ? new Uint8Array(0) : pending.slice(offset);
  }
  if (pending.length > 0) throw new Error('stream ended in the middle of a frame');
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}
