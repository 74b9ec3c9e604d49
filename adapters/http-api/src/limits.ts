// What one client may make the HTTP server hold, and the listeners that enforce it outside
// fastify's request handling (where a throw would be an uncaught exception, i.e. a dead roostd).
import { STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { FastifyBaseLogger } from 'fastify';
import { ConnectionCaps, RoostError } from '@roost/core';
import { toHttpError } from './errors.js';

export interface HttpLimits {
  /** Longest a client may take to send a request line and headers (slowloris), from its first byte or from the end of its previous request. */
  headersTimeoutMs: number;
  /** Longest a client may take to send a whole request, body included; also the longest an upgrade may wait for its WebSocket. */
  requestTimeoutMs: number;
  /** How long a kept-alive connection may sit idle between two requests. */
  keepAliveTimeoutMs: number;
  /** Request line plus headers, in bytes. */
  maxHeaderBytes: number;
  /** Request body, in bytes. */
  bodyLimitBytes: number;
  /** Open connections in total, upgraded ones included; a connection past it is closed at once. */
  maxConnections: number;
  /** Open connections from one source address; a connection past it is closed at once. */
  maxConnectionsPerSource: number;
  /** One WebSocket message on the SSH tunnel, in bytes (ws's default would be 100 MiB). */
  maxWebSocketMessageBytes: number;
  /** stdout, and stderr, of exec/run/logs that an answer in JSON holds; the rest is read and dropped. */
  maxJsonOutputBytes: number;
}

/** Options of node's http server and fastify that carry the limits. */
export function serverOptions(limits: HttpLimits) {
  return {
    bodyLimit: limits.bodyLimitBytes,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    // No idle timeout on a socket with a request in flight: an exec of a quiet command and
    // `logs --follow` are legitimately silent for hours. The deadlines above cover clients that
    // never finish a request; the connection caps cover how many there can be.
    connectionTimeout: 0,
    http: {
      maxHeaderSize: limits.maxHeaderBytes,
      headersTimeout: limits.headersTimeoutMs,
      // Node checks the two deadlines on this period (default 30 s, which would let a slow
      // client live up to 30 s past its deadline); the check walks only unfinished requests.
      connectionsCheckingInterval: Math.min(1000, limits.headersTimeoutMs),
    },
  };
}

/**
 * Caps connections in total and per source address, and keeps the server alive through
 * errors no request handler sees (accept failing with EMFILE emits 'error' on the server).
 */
export function guardConnections(server: Server, limits: HttpLimits, logger: FastifyBaseLogger): void {
  // node drops a connection past the total before 'connection' (and says so in 'drop'); the
  // caps count per source.
  server.maxConnections = limits.maxConnections;
  const caps = new ConnectionCaps({ maxPerSource: limits.maxConnectionsPerSource, maxTotal: Number.POSITIVE_INFINITY });
  server.on('connection', (socket: Socket) => {
    try {
      const source = socket.remoteAddress ?? '';
      const place = caps.admit(source);
      if (typeof place === 'string') {
        logger.debug({ source, ...caps.counts }, 'connection refused: too many from this source');
        socket.destroy();
        return;
      }
      socket.once('close', () => place.release());
    } catch (error) {
      logger.error({ err: error }, 'connection guard failed');
      socket.destroy();
    }
  });
  server.on('drop', (data?: { remoteAddress?: string }) => {
    logger.debug({ source: data?.remoteAddress }, 'connection refused: server at maxConnections');
  });
  // An Expect other than 100-continue: node would answer 417 with an empty body of its own.
  server.on('checkExpectation', (request: IncomingMessage, response: ServerResponse) => {
    try {
      const { body } = toHttpError(new RoostError('VALIDATION_FAILED', 'only "Expect: 100-continue" is supported'), '');
      const text = JSON.stringify(body);
      response.writeHead(417, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), connection: 'close' }).end(text);
    } catch (error) {
      logger.error({ err: error }, 'answering an Expect header failed');
      request.socket.destroy();
    }
  });
  server.on('error', (error: NodeJS.ErrnoException) => {
    // After listen() the only errors are accept failures (EMFILE, ENFILE): the connection is
    // lost, the server goes on.
    logger.warn({ err: error.message, code: error.code }, 'HTTP server error');
  });
}

/**
 * Answers a request node's parser refused (malformed, headers too large, too slow) with the
 * API's error body, then closes the connection. Runs outside fastify: it must not throw.
 */
export function answerClientError(this: { log: FastifyBaseLogger }, error: NodeJS.ErrnoException, socket: Duplex): void {
  try {
    if (error.code === 'ECONNRESET' || socket.destroyed) return;
    const refusal =
      error.code === 'HPE_HEADER_OVERFLOW'
        ? { status: 431, error: new RoostError('REQUEST_TOO_LARGE', 'request line and headers are too large') }
        : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? { status: 408, error: new RoostError('REQUEST_TIMEOUT', 'the request took too long to arrive') }
          : { status: 400, error: new RoostError('VALIDATION_FAILED', `malformed HTTP request (${error.code ?? 'parse error'})`) };
    this.log.debug({ err: error.message, code: error.code }, 'client error');
    const { body } = toHttpError(refusal.error, '');
    writeRawResponse(socket, refusal.status, body);
    socket.destroy();
  } catch (failure) {
    this.log.error({ err: failure }, 'client error handler failed');
    socket.destroy();
  }
}

/** Writes a whole JSON response on a socket that has left node's HTTP machinery. */
export function writeRawResponse(socket: Duplex, status: number, body: unknown): void {
  if (!socket.writable) return;
  const text = JSON.stringify(body);
  socket.write(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`,
  );
}
