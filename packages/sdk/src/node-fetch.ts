// A fetch over node:http for Node programs that start often, like the CLI. Node's built-in
// fetch compiles undici's WebAssembly HTTP parser on its first request: ~100 ms of a CLI
// command's life, more than roostd takes to create a sandbox.
import { request as httpRequest } from 'node:http';
import { Readable } from 'node:stream';

/**
 * Drop-in `fetch` for `new Roost({ fetch: nodeHttpFetch })`: supports what the SDK uses
 * (method, headers, a string, bytes or a streamed body, AbortSignal, a streamed response body).
 *
 * @example
 * import { nodeHttpFetch } from '@roost/sdk/node';
 * const roost = new Roost({ apiUrl, token, fetch: nodeHttpFetch });
 */
export const nodeHttpFetch: typeof fetch = async (input, init = {}) => {
  const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
  // node:https pulls in TLS (~5 ms of start-up): only for https URLs.
  const send = url.protocol === 'https:' ? (await import('node:https')).request : httpRequest;
  return new Promise<Response>((resolve, reject) => {
    const signal = init.signal ?? undefined;
    if (signal?.aborted) return reject(signal.reason);
    // No keep-alive agent: an idle pooled socket would keep a short-lived process alive until the
    // server's keep-alive timeout (72 s in fastify).
    const req = send(url, { method: init.method ?? 'GET', headers: init.headers as Record<string, string>, agent: false }, (res) => {
      const headers = new Headers();
      for (const [name, value] of Object.entries(res.headers)) {
        if (value !== undefined) headers.set(name, Array.isArray(value) ? value.join(', ') : value);
      }
      const status = res.statusCode ?? 500;
      const body = status === 204 || status === 304 ? null : (Readable.toWeb(res) as ReadableStream<Uint8Array>);
      resolve(new Response(body, { status, statusText: res.statusMessage, headers }));
    });
    const onAbort = () => req.destroy(signal?.reason instanceof Error ? signal.reason : new Error('This operation was aborted'));
    signal?.addEventListener('abort', onAbort, { once: true });
    req.on('error', reject);
    req.on('close', () => signal?.removeEventListener('abort', onAbort));
    const body = init.body as unknown;
    if (body === undefined || body === null || typeof body === 'string' || body instanceof Uint8Array) {
      req.end(body ?? undefined);
      return;
    }
    // A streamed body, piped with backpressure. An answer that comes before the whole body went
    // (an error: too large, no such sandbox) stops the sending; the server closes the connection.
    const source = body instanceof ReadableStream ? Readable.fromWeb(body as import('node:stream/web').ReadableStream) : Readable.from(body as AsyncIterable<Uint8Array>);
    source.on('error', (error) => req.destroy(error));
    req.once('response', () => {
      if (source.readableEnded) return;
      source.unpipe(req);
      source.destroy();
    });
    source.pipe(req);
  });
};
