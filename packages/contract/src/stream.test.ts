import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeFrames, decodeJsonPayload, encodeFrameHeader, encodeJsonFrame, FrameKind } from './stream.js';

async function* chunked(bytes: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let offset = 0; offset < bytes.length; offset += size) yield bytes.subarray(offset, offset + size);
}

describe('stream framing', () => {
  const binary = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) % 256);
  const frames = Buffer.concat([
    encodeFrameHeader(FrameKind.stdout, binary.length),
    binary,
    encodeFrameHeader(FrameKind.stderr, 0),
    encodeJsonFrame(FrameKind.exit, { exitCode: 3 }),
  ]);

  for (const size of [1, 7, 4096]) {
    it(`decodes frames split into ${size}-byte chunks, byte-exact`, async () => {
      const decoded = [];
      for await (const frame of decodeFrames(chunked(frames, size))) decoded.push({ kind: frame.kind, payload: Buffer.from(frame.payload) });
      assert.equal(decoded.length, 3);
      assert.deepEqual(decoded[0], { kind: FrameKind.stdout, payload: Buffer.from(binary) });
      assert.equal(decoded[1].payload.length, 0);
      assert.deepEqual(decodeJsonPayload({ kind: FrameKind.exit, payload: decoded[2].payload }), { exitCode: 3 });
    });
  }

  it('refuses a stream cut in the middle of a frame', async () => {
    await assert.rejects(async () => {
      for await (const _ of decodeFrames(chunked(frames.subarray(0, 100), 10)));
    }, /middle of a frame/);
  });
});
