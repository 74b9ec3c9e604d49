// The frames `roost-relay listen` speaks on its stdin/stdout (native/roost-relay.c has the same
// table). Every frame: u8 type | u32 connection id | u32 payload length | payload, big-endian.
// Written by hand: it is nine bytes of header, and the C side must match it byte for byte.

/** Bytes of a frame header. */
export const RELAY_HEADER_BYTES = 9;
/** Unacknowledged DATA bytes each side may send per connection before a WINDOW frame. */
export const RELAY_INITIAL_WINDOW = 256 * 1024;
/** The longest payload either side accepts. */
export const RELAY_MAX_PAYLOAD = 64 * 1024;

const TYPE = { listening: 1, open: 2, data: 3, eof: 4, close: 5, window: 6 } as const;
const NAME = ['', 'listening', 'open', 'data', 'eof', 'close', 'window'] as const;

export type RelayFrame =
  /** The relay listens; `port` is 0 for a unix socket, whose path is `address`. Connection id 0. */
  | { type: 'listening'; port: number; address: string }
  /** A connection was accepted; `address`/`port` are the peer's (empty and 0 for unix). */
  | { type: 'open'; id: number; port: number; address: string }
  | { type: 'data'; id: number; data: Buffer }
  /** The sender will send no more data on this connection (half-close). */
  | { type: 'eof'; id: number }
  /** The connection is gone (from the daemon: abort it). `reason` when it failed. */
  | { type: 'close'; id: number; reason?: string }
  /** The receiver of DATA grants `bytes` more. */
  | { type: 'window'; id: number; bytes: number };

export class RelayProtocolError extends Error {
  readonly code = 'RELAY_PROTOCOL';
}

function addressPayload(port: number, address: string): Buffer {
  const text = Buffer.from(address, 'utf8');
  const payload = Buffer.allocUnsafe(2 + text.length);
  payload.writeUInt16BE(port, 0);
  text.copy(payload, 2);
  return payload;
}

export function encodeRelayFrame(frame: RelayFrame): Buffer {
  let id = 0;
  let payload: Buffer | undefined;
  switch (frame.type) {
    case 'listening':
      payload = addressPayload(frame.port, frame.address);
      break;
    case 'open':
      id = frame.id;
      payload = addressPayload(frame.port, frame.address);
      break;
    case 'data':
      id = frame.id;
      payload = frame.data;
      break;
    case 'eof':
      id = frame.id;
      break;
    case 'close':
      id = frame.id;
      if (frame.reason) payload = Buffer.from(frame.reason, 'utf8');
      break;
    case 'window':
      id = frame.id;
      payload = Buffer.allocUnsafe(4);
      payload.writeUInt32BE(frame.bytes, 0);
      break;
  }
  const length = payload?.length ?? 0;
  if (length > RELAY_MAX_PAYLOAD) throw new RelayProtocolError(`a ${frame.type} frame of ${length} bytes exceeds ${RELAY_MAX_PAYLOAD}`);
  const header = Buffer.allocUnsafe(RELAY_HEADER_BYTES);
  header.writeUInt8(TYPE[frame.type], 0);
  header.writeUInt32BE(id, 1);
  header.writeUInt32BE(length, 5);
  return payload ? Buffer.concat([header, payload], RELAY_HEADER_BYTES + length) : header;
}

/**
 * Turns the relay's byte stream back into frames, however it was split. push() returns the
 * frames that are complete; the rest waits for the next chunk (at most one frame's worth).
 * Throws RelayProtocolError on an unknown type or an oversized frame.
 */
export class RelayFrameDecoder {
  private pending: Buffer = Buffer.alloc(0);

  /** Bytes held that do not yet make a whole frame. */
  get pendingBytes(): number {
    return this.pending.length;
  }

  push(chunk: Buffer): RelayFrame[] {
    return [...this.decode(chunk)];
  }

  /**
   * push(), one frame at a time: a frame that breaks the protocol throws only once the frames
   * before it were taken (a LISTENING in the same chunk as the violation still counts).
   */
  *decode(chunk: Buffer): Generator<RelayFrame, void, undefined> {
    let buf = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    try {
      while (buf.length >= RELAY_HEADER_BYTES) {
        const type = buf.readUInt8(0);
        const id = buf.readUInt32BE(1);
        const length = buf.readUInt32BE(5);
        const name = NAME[type];
        if (!name) throw new RelayProtocolError(`unknown relay frame type ${type}`);
        if (length > RELAY_MAX_PAYLOAD) throw new RelayProtocolError(`a relay frame of ${length} bytes exceeds ${RELAY_MAX_PAYLOAD}`);
        if (buf.length < RELAY_HEADER_BYTES + length) break;
        // A view, not a copy: the chunk it points into is not reused by its producer.
        const payload = buf.subarray(RELAY_HEADER_BYTES, RELAY_HEADER_BYTES + length);
        const frame = decodePayload(name, id, payload);
        buf = buf.subarray(RELAY_HEADER_BYTES + length);
        yield frame;
      }
    } finally {
      // Copied, so a small remainder does not keep a large chunk alive.
      this.pending = Buffer.from(buf);
    }
  }
}

function decodePayload(type: (typeof NAME)[number], id: number, payload: Buffer): RelayFrame {
  const address = () => {
    if (payload.length < 2) throw new RelayProtocolError(`a ${type} frame needs a 2-byte port`);
    return { port: payload.readUInt16BE(0), address: payload.subarray(2).toString('utf8') };
  };
  switch (type) {
    case 'listening':
      return { type, ...address() };
    case 'open':
      return { type, id, ...address() };
    case 'data':
      return { type, id, data: payload };
    case 'eof':
      return { type, id };
    case 'close':
      return payload.length ? { type, id, reason: payload.toString('utf8') } : { type, id };
    case 'window':
      if (payload.length !== 4) throw new RelayProtocolError('a window frame carries exactly 4 bytes');
      return { type, id, bytes: payload.readUInt32BE(0) };
    default:
      throw new RelayProtocolError(`unknown relay frame type ${type}`);
  }
}
