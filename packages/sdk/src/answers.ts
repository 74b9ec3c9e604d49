// Telling roostd's answers from anything else that may listen on the API URL (another web
// server, a service on the wrong port, a program that does not speak HTTP): those become a
// NotRoostdError that says what came back, not an INTERNAL error that blames Roost.
import { DaemonUnreachableError, NotRoostdError, RoostApiError } from './errors.js';

/** roostd's error bodies are a few hundred bytes; an unknown server's may be endless. */
const maxErrorBodyBytes = 64 * 1024;

/** The body's first bytes (at most `maxBytes`); the rest is not read. */
async function readPrefix(response: Response, maxBytes: number): Promise<{ bytes: Uint8Array; whole: boolean }> {
  if (!response.body) return { bytes: new Uint8Array(), whole: true };
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < maxBytes) {
      const { done, value } = await reader.read();
      if (done) return { bytes: concat(chunks, size), whole: true };
      chunks.push(value);
      size += value.length;
    }
    return { bytes: concat(chunks, size).subarray(0, maxBytes), whole: false };
  } finally {
    reader.cancel().catch(() => {});
  }
}

function concat(chunks: Uint8Array[], size: number): Uint8Array {
  const all = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    all.set(chunk, offset);
    offset += chunk.length;
  }
  return all;
}

/** "HTTP 404 text/html: "<!DOCTYPE html>…"": enough to recognise the server, on one line. */
function describeAnswer(response: Response, body: Uint8Array): string {
  const type = response.headers.get('content-type')?.split(';')[0]?.trim();
  const text = new TextDecoder().decode(body.subarray(0, 200)).replace(/[\x00-\x1f\x7f]+/g, ' ').replace(/\s+/g, ' ').trim();
  const snippet = text.length > 60 ? `${text.slice(0, 60)}…` : text;
  return `HTTP ${response.status}${type ? ` ${type}` : ''}${snippet ? `: ${JSON.stringify(snippet)}` : ', no body'}`;
}

/** The error for a non-2xx answer: roostd's own error, or NotRoostdError when it is not roostd's shape. */
export async function errorOfAnswer(apiUrl: string, response: Response): Promise<Error> {
  const { bytes, whole } = await readPrefix(response, maxErrorBodyBytes).catch(() => ({ bytes: new Uint8Array(), whole: false }));
  let body: unknown;
  try {
    body = whole ? JSON.parse(new TextDecoder().decode(bytes)) : undefined;
  } catch {
    body = undefined;
  }
  if (RoostApiError.isErrorBody(body)) return RoostApiError.fromBody(response.status, body);
  return new NotRoostdError(apiUrl, describeAnswer(response, bytes));
}

/** A 2xx answer must be of the media type asked for (a 204 has none). */
export async function checkMediaType(apiUrl: string, response: Response, accept: string): Promise<void> {
  if (response.status === 204) return;
  const type = response.headers.get('content-type')?.split(';')[0]?.trim().toLowerCase();
  if (type === accept) return;
  const { bytes } = await readPrefix(response, 200).catch(() => ({ bytes: new Uint8Array() }));
  throw new NotRoostdError(apiUrl, describeAnswer(response, bytes));
}

/** A request that failed before any answer: unreachable, or an answer that was not HTTP at all. */
export function errorOfFailedRequest(apiUrl: string, error: unknown): Error {
  const code = (error as { code?: unknown })?.code ?? (error as { cause?: { code?: unknown } })?.cause?.code;
  // node's HTTP parser (llhttp) names what it could not parse HPE_…; undici wraps the same.
  if (typeof code === 'string' && code.startsWith('HPE_')) return new NotRoostdError(apiUrl, `something that is not HTTP: ${code}`);
  return new DaemonUnreachableError(apiUrl, error);
}
