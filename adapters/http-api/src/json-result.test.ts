import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Fastify from 'fastify';
import { RoostError, type OutputChunk } from '@roost/core';
import { answerJsonResult, prefersJson, type JsonResultSource } from './json-result.js';

describe('prefersJson: the Accept header decides between JSON and the stream', () => {
  const cases: [string | undefined, boolean][] = [
    [undefined, false],
    ['*/*', false],
    ['application/*', false],
    ['text/html', false],
    ['application/vnd.roost.stream', false],
    ['application/json', true],
    ['APPLICATION/JSON', true],
    ['application/json; charset=utf-8', true],
    ['application/json, text/plain, */*', true],
    ['*/*;q=0.1, application/json', true],
    ['application/json;q=0.5, */*', false],
    ['application/json;q=0, */*', false],
    ['application/vnd.roost.stream;q=0.2, application/json;q=0.9', true],
    ['application/json, application/vnd.roost.stream', true],
    ['application/vnd.roost.stream, application/json', false],
  ];
  for (const [accept, json] of cases) {
    it(`${accept ?? '(none)'} → ${json ? 'JSON' : 'stream'}`, () => assert.equal(prefersJson(accept), json));
  }
});

describe('answerJsonResult', () => {
  const bytes = (text: string | number[]) => (typeof text === 'string' ? new TextEncoder().encode(text) : Uint8Array.from(text));
  async function* chunks(list: OutputChunk[], failWith?: Error): AsyncGenerator<OutputChunk> {
    yield* list;
    if (failWith) throw failWith;
  }
  async function answer(source: JsonResultSource<object>, maxOutputBytes = 8) {
    const app = Fastify();
    app.post('/', (request, reply) => answerJsonResult(request, reply, source, maxOutputBytes));
    try {
      const response = await app.inject({ method: 'POST', url: '/' });
      return { status: response.statusCode, type: response.headers['content-type'], body: response.json() as Record<string, unknown> };
    } finally {
      await app.close();
    }
  }
  const exited = (exitCode: number) => () => Promise.resolve({ exitCode });

  it('gives text as text and other bytes as base64, each stream on its own', async () => {
    const binary = [0x89, 0x50, 0x4e, 0x47, 0x00, 0xff];
    const { status, type, body } = await answer({
      output: chunks([
        { stream: 'stdout', data: bytes(binary) },
        { stream: 'stderr', data: bytes('\uFEFFé') },
      ]),
      finish: exited(3),
      cancel() {},
    });
    assert.equal(status, 200);
    assert.match(String(type), /^application\/json/);
    assert.deepEqual(body, { exitCode: 3, stdout: Buffer.from(binary).toString('base64'), stderr: '\uFEFFé', stdoutEncoding: 'base64', stderrEncoding: 'utf8', truncated: false });
  });

  it('keeps at most the cap of each stream, says truncated, and drops a character the cut split', async () => {
    const { body } = await answer({
      output: chunks([
        { stream: 'stdout', data: bytes('1234567') },
        { stream: 'stdout', data: bytes('ü and more') }, // ü is 2 bytes: the cut at 8 splits it
        { stream: 'stderr', data: bytes('short') },
      ]),
      finish: exited(0),
      cancel() {},
    });
    assert.deepEqual(body, { exitCode: 0, stdout: '1234567', stderr: 'short', stdoutEncoding: 'utf8', stderrEncoding: 'utf8', truncated: true });
  });

  it('answers a failure after the start with the error body and its 5xx status, never half a document', async () => {
    const { status, body } = await answer({
      output: chunks([{ stream: 'stdout', data: bytes('partial') }], new RoostError('RUNTIME_FAILED', 'the relay died')),
      finish: exited(0),
      cancel() {},
    });
    assert.equal(status, 500);
    assert.deepEqual(Object.keys(body), ['error']);
    assert.equal((body.error as { code: string }).code, 'RUNTIME_FAILED');
  });
});
