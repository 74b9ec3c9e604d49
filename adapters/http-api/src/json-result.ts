// exec, run and logs for a client that asks for JSON (curl -H 'Accept: application/json'): the
// output is collected and answered as one document once the process ended. Everyone else (no
// Accept, */*, the SDK) gets the framed stream as before, which follows the client's pace; this
// answer cannot, so what it holds is capped and the rest is read and dropped.
import type { ServerResponse } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import Negotiator from 'negotiator';
import { streamMediaType, type ExecResult, type ExitFrame } from '@roost/contract';
import type { OutputChunk } from '@roost/core';
import { toHttpError } from './errors.js';

const jsonMediaTypes = ['application/json', 'application/json; charset=utf-8'];

/**
 * True when the Accept header prefers JSON to the stream, by q-values and then specificity; a
 * tie goes to the type the client lists first, and `*\/*` or no Accept to the stream.
 */
export function prefersJson(accept: string | undefined): boolean {
  const [best] = new Negotiator({ headers: { accept } }).mediaTypes([streamMediaType, ...jsonMediaTypes]);
  return best !== undefined && best !== streamMediaType;
}

/** What one JSON answer is made of. */
export interface JsonResultSource<Extra extends object> {
  output: AsyncIterable<OutputChunk>;
  /** How it ended (and, for a run, its sandbox), read once the output is done. */
  finish(): Promise<ExitFrame & Extra>;
  /** Stops the process: the client went away, as a closed stream does. */
  cancel(): void;
}

/**
 * Answers the source as one ExecResult (plus whatever `finish` adds). After this starts nothing
 * may throw into fastify: a failure once the process ran is answered with the error body (a
 * 5xx for the runtime), never with half a document.
 */
export async function answerJsonResult<Extra extends object>(
  request: FastifyRequest,
  reply: FastifyReply,
  source: JsonResultSource<Extra>,
  maxOutputBytes: number,
): Promise<void> {
  reply.hijack();
  const raw = reply.raw;
  let clientGone = false;
  const onGone = () => {
    if (clientGone || raw.writableFinished) return;
    clientGone = true;
    try {
      source.cancel();
    } catch (error) {
      request.log.warn({ err: error }, 'stopping the process after a disconnect failed');
    }
  };
  // Outside the handler's try: must not throw into the event loop.
  raw.on('close', onGone);
  // A write on a reset socket is reported here; unheard, it would be fatal.
  raw.on('error', onGone);
  // The client may have gone while the sandbox was being made.
  if (request.raw.socket.destroyed) onGone();

  const collected = new CollectedOutput(maxOutputBytes);
  try {
    for await (const chunk of source.output) {
      if (clientGone) break;
      collected.add(chunk);
    }
    const { exitCode, signal, reason, ...extra } = await source.finish();
    if (clientGone) return;
    const result: ExecResult = {
      exitCode,
      ...(signal !== undefined && { signal }),
      ...(reason !== undefined && { reason }),
      ...collected.fields(),
    };
    send(raw, 200, { ...result, ...extra });
  } catch (error) {
    const httpError = toHttpError(error, request.id);
    if (httpError.internal) request.log.error({ err: error }, 'answer in JSON failed');
    if (!clientGone) send(raw, httpError.status, httpError.body);
  }
}

/** stdout and stderr, each up to its cap; past it the rest is counted as dropped. */
class CollectedOutput {
  private readonly streams = {
    stdout: { parts: [] as Uint8Array[], bytes: 0, cut: false },
    stderr: { parts: [] as Uint8Array[], bytes: 0, cut: false },
  };

  constructor(private readonly maxBytesPerStream: number) {}

  add(chunk: OutputChunk): void {
    const stream = this.streams[chunk.stream];
    const room = this.maxBytesPerStream - stream.bytes;
    if (chunk.data.length > room) stream.cut = true;
    if (room <= 0) return;
    const kept = chunk.data.length > room ? chunk.data.subarray(0, room) : chunk.data;
    stream.parts.push(kept);
    stream.bytes += kept.length;
  }

  fields(): Pick<ExecResult, 'stdout' | 'stderr' | 'stdoutEncoding' | 'stderrEncoding' | 'truncated'> {
    const stdout = encodeOutput(Buffer.concat(this.streams.stdout.parts), this.streams.stdout.cut);
    const stderr = encodeOutput(Buffer.concat(this.streams.stderr.parts), this.streams.stderr.cut);
    return {
      stdout: stdout.text,
      stderr: stderr.text,
      stdoutEncoding: stdout.encoding,
      stderrEncoding: stderr.encoding,
      truncated: this.streams.stdout.cut || this.streams.stderr.cut,
    };
  }
}

/** Text when the bytes are valid UTF-8, else base64 of them, so every byte comes back as it was. */
function encodeOutput(bytes: Buffer, cut: boolean): { text: string; encoding: 'utf8' | 'base64' } {
  try {
    // fatal: invalid UTF-8 throws; ignoreBOM: a leading BOM is output like any other bytes; on
    // a cut, `stream` drops a character the cut split instead of calling the whole output binary.
    const text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes, { stream: cut });
    return { text, encoding: 'utf8' };
  } catch {
    return { text: bytes.toString('base64'), encoding: 'base64' };
  }
}

function send(raw: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  raw.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  raw.end(text);
}
