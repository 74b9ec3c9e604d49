import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  encodeRelayFrame, RelayFrameDecoder, RelayProtocolError, RELAY_HEADER_BYTES, RELAY_MAX_PAYLOAD, type RelayFrame,
} from './relay-protocol.js';

const frames: RelayFrame[] = [
  { type: 'listening', port: 41234, address: '127.0.0.1' },
  { type: 'listening', port: 0, address: '/tmp/ssh-agent.sock' },
  { type: 'open', id: 1, port: 50122, address: '::1' },
  { type: 'open', id: 2, port: 0, address: '' },
  { type: 'data', id: 1, data: Buffer.from([0, 1, 2, 255, 254]) },
  { type: 'data', id: 0xffffffff, data: Buffer.alloc(0) },
  { type: 'eof', id: 1 },
  { type: 'close', id: 1 },
  { type: 'close', id: 2, reason: 'read: Connection reset by peer' },
  { type: 'window', id: 7, bytes: 262144 },
];

describe('relay framing', () => {
  it('encodes the documented layout: type, id, length, payload (big-endian)', () => {
    const bytes = encodeRelayFrame({ type: 'data', id: 0x01020304, data: Buffer.from('hi') });
    assert.deepEqual([...bytes], [3, 1, 2, 3, 4, 0, 0, 0, 2, 0x68, 0x69]);
    const listening = encodeRelayFrame({ type: 'listening', port: 6010, address: '127.0.0.1' });
    assert.deepEqual([...listening.subarray(0, RELAY_HEADER_BYTES + 2)], [1, 0, 0, 0, 0, 0, 0, 0, 11, 0x17, 0x7a]);
    assert.deepEqual([...encodeRelayFrame({ type: 'window', id: 1, bytes: 65536 })], [6, 0, 0, 0, 1, 0, 0, 0, 4, 0, 1, 0, 0]);
  });

  it('decodes every frame type back to what was encoded', () => {
    const decoder = new RelayFrameDecoder();
    assert.deepEqual(decoder.push(Buffer.concat(frames.map(encodeRelayFrame))), frames);
    assert.equal(decoder.pendingBytes, 0);
  });

  it('reassembles frames split at every byte boundary', () => {
    const stream = Buffer.concat(frames.map(encodeRelayFrame));
    for (let cut = 1; cut < stream.length; cut++) {
      const decoder = new RelayFrameDecoder();
      const got = [...decoder.push(stream.subarray(0, cut)), ...decoder.push(stream.subarray(cut))];
      assert.deepEqual(got, frames, `split at byte ${cut}`);
    }
    const decoder = new RelayFrameDecoder();
    const oneByOne = [...stream].flatMap((byte) => decoder.push(Buffer.from([byte])));
    assert.deepEqual(oneByOne, frames);
  });

  it('keeps an incomplete frame until the rest arrives', () => {
    const decoder = new RelayFrameDecoder();
    const bytes = encodeRelayFrame({ type: 'data', id: 3, data: Buffer.alloc(1000, 7) });
    assert.deepEqual(decoder.push(bytes.subarray(0, 500)), []);
    assert.equal(decoder.pendingBytes, 500);
    const [frame] = decoder.push(bytes.subarray(500));
    assert.equal(frame.type === 'data' && frame.data.length, 1000);
  });

  it('passes UTF-8 addresses and a full-size payload', () => {
    const decoder = new RelayFrameDecoder();
    const big = Buffer.alloc(RELAY_MAX_PAYLOAD, 0xab);
    const got = decoder.push(Buffer.concat([
      encodeRelayFrame({ type: 'listening', port: 0, address: '/tmp/sockets/ünïcode' }),
      encodeRelayFrame({ type: 'data', id: 9, data: big }),
    ]));
    assert.deepEqual(got[0], { type: 'listening', port: 0, address: '/tmp/sockets/ünïcode' });
    assert.ok(got[1].type === 'data' && got[1].data.equals(big));
  });

  it('refuses unknown types, oversized frames and malformed payloads', () => {
    assert.throws(() => new RelayFrameDecoder().push(Buffer.from([9, 0, 0, 0, 0, 0, 0, 0, 0])), RelayProtocolError);
    const oversized = Buffer.from([3, 0, 0, 0, 1, 0, 1, 0, 1]); // 65537 bytes announced
    assert.throws(() => new RelayFrameDecoder().push(oversized), /exceeds 65536/);
    assert.throws(() => new RelayFrameDecoder().push(Buffer.from([6, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0])), /exactly 4 bytes/);
    assert.throws(() => encodeRelayFrame({ type: 'data', id: 1, data: Buffer.alloc(RELAY_MAX_PAYLOAD + 1) }), RelayProtocolError);
  });
});
