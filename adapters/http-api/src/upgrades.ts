// HTTP upgrades on the API port: the routes of the table marked `webSocket`. sshTunnel
// (`roost proxy`) carries one SSH connection to the gateway in binary messages; execWebSocket and
// runWebSocket carry a command's stdin, terminal size and output (command-socket.ts).
//
// Node hands an upgrade's socket over bare: without node's 'error' listener and without the
// request deadlines. Until ws owns it, this code keeps both itself, and catches every error: a
// bad percent-escape in the path, or a reset after the reply, was an uncaught exception that
// killed roostd.
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createWebSocketStream, WebSocketServer, type WebSocket } from 'ws';
import type { FastifyInstance } from 'fastify';
import { FrameKind, routes, type RouteSpec, type Sandbox } from '@roost/contract';
import { RoostError, type AuthService, type FileUploads, type SandboxRecord, type SandboxService, type UserRecord } from '@roost/core';
import { serveCommandSocket, type CommandSocketOpts } from './command-socket.js';
import { execOptsOf, runFilesOf, runOptsOf } from './command-opts.js';
import { toHttpError } from './errors.js';
import { writeRawResponse, type HttpLimits } from './limits.js';
import { bearerToken, parse } from './request.js';

export interface UpgradeDeps {
  auth: AuthService;
  sandboxes: SandboxService;
  uploads: FileUploads;
  limits: HttpLimits;
  acceptSshStream(stream: Duplex, remoteAddress: string, sandboxId: string): void;
  /** The POST routes' streaming of a session, so both ways send the same frames. */
  streamSession: CommandSocketOpts['stream'];
  toApiSandbox(sandbox: SandboxRecord): Sandbox;
}

/** How long a refused upgrade's client gets to read the refusal before the socket is cut. */
const refusalLingerMs = 1000;

export function serveUpgrades(app: FastifyInstance, deps: UpgradeDeps): void {
  const log = app.log;
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: deps.limits.maxWebSocketMessageBytes });
  const table = Object.values(routes as Record<string, RouteSpec>).map((route) => ({ route, pattern: pathPattern(route.path) }));
  const webSocketPaths = table.filter(({ route }) => route.webSocket).map(({ route }) => `GET ${route.path}`).join(', ');
  /** Sockets between the upgrade request and ws taking them (closed with the server). */
  const pending = new Set<Duplex>();

  const refuse = (socket: Duplex, error: unknown) => {
    try {
      const httpError = toHttpError(error, '');
      if (httpError.internal) log.error({ err: error }, 'upgrade failed');
      writeRawResponse(socket, httpError.status, httpError.body);
      socket.end();
      // Half-open sockets are allowed on the HTTP server: a client that never closes its side
      // would keep this one.
      const linger = setTimeout(() => socket.destroy(), refusalLingerMs);
      socket.once('close', () => clearTimeout(linger));
    } catch (failure) {
      log.error({ err: failure }, 'upgrade refusal failed');
      socket.destroy();
    }
  };

  const upgrade = async (request: IncomingMessage, socket: Duplex, head: Buffer, settle: () => void) => {
    const path = (request.url ?? '').split('?')[0]!;
    // A path served both ways (exec, runs) upgrades to its WebSocket route.
    const target = table.find(({ route, pattern }) => route.webSocket && pattern.test(path)) ?? table.find(({ pattern }) => pattern.test(path));
    // Deny by default: only a route the table marks public answers without a token.
    const user = target?.route.public ? undefined : await deps.auth.authenticate(bearerToken(request.headers.authorization));
    if (!target) throw new RoostError('NOT_FOUND', 'no route at this path');
    if (!target.route.webSocket || !user) {
      throw new RoostError('VALIDATION_FAILED', `only ${webSocketPaths} are WebSocket routes`);
    }
    // ws would refuse a bad handshake too, but with a text body: checked here, the client gets the API's error.
    const { headers } = request;
    if (
      request.method !== 'GET' ||
      headers.upgrade?.toLowerCase() !== 'websocket' ||
      !/^[+/0-9A-Za-z]{22}==$/.test(headers['sec-websocket-key'] ?? '') ||
      headers['sec-websocket-version'] !== '13'
    ) {
      throw new RoostError('VALIDATION_FAILED', `${target.route.path} takes a WebSocket handshake: GET, Upgrade: websocket, Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key`);
    }
    const ref = target.route.params ? parse(target.route.params, { ref: decodeSegment(target.pattern.exec(path)![1]!) }).ref as string : undefined;
    const accept = await prepare(target.route, user, ref);
    if (socket.destroyed) return;
    const remoteAddress = socket instanceof Socket ? (socket.remoteAddress ?? '') : '';
    wss.handleUpgrade(request, socket, head, (ws) => {
      settle();
      try {
        accept(ws, remoteAddress);
      } catch (error) {
        log.error({ err: error }, 'WebSocket hand-over failed');
        ws.terminate();
      }
    });
  };

  /** Checks what can be checked before the upgrade (a refusal is then a plain HTTP error) and says what to do with the socket. */
  const prepare = async (route: RouteSpec, user: UserRecord, ref: string | undefined): Promise<(ws: WebSocket, remoteAddress: string) => void> => {
    const commandSocket = (start: CommandSocketOpts['start']) => (ws: WebSocket) =>
      serveCommandSocket(ws, {
        log,
        requestId: `req_${randomBytes(6).toString('hex')}`,
        firstMessageTimeoutMs: deps.limits.requestTimeoutMs,
        start,
        stream: deps.streamSession,
      });
    if (route === routes.sshTunnel) {
      const sandbox = await deps.sandboxes.ensureAwake(user.id, ref!);
      return (ws, remoteAddress) => {
        const stream = createWebSocketStream(ws);
        stream.on('error', (error) => log.debug({ err: error.message }, 'SSH tunnel stream error'));
        deps.acceptSshStream(stream, remoteAddress, sandbox.id);
      };
    }
    if (route === routes.execWebSocket) {
      await deps.sandboxes.ensureAwake(user.id, ref!);
      return commandSocket(async (request) => {
        const body = parse(routes.execWebSocket.webSocket.firstMessage, request);
        return { session: await deps.sandboxes.exec(user.id, ref!, execOptsOf(body, true)) };
      });
    }
    if (route === routes.runWebSocket) {
      return commandSocket(async (request) => {
        const body = parse(routes.runWebSocket.webSocket.firstMessage, request);
        const session = await deps.sandboxes.run(user.id, { ...runOptsOf(body, true), files: await runFilesOf(deps.uploads, user.id, body.fileIds) });
        return {
          session,
          frames: {
            first: { kind: FrameKind.sandbox, value: deps.toApiSandbox(session.sandbox) },
            // Before the exit frame, the sandbox as the run left it (status, exit code), as the POST sends.
            last: async () => ({ kind: FrameKind.sandbox, value: deps.toApiSandbox(await session.ended) }),
          },
        };
      });
    }
    throw new RoostError('INTERNAL', `no WebSocket handler for ${route.path}`);
  };

  app.server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', (error) => log.debug({ err: error.message }, 'upgrade socket error'));
    pending.add(socket);
    // Auth and waking a sandbox are awaited with no node deadline on the socket.
    const deadline = setTimeout(() => socket.destroy(), deps.limits.requestTimeoutMs);
    const settle = () => {
      clearTimeout(deadline);
      pending.delete(socket);
    };
    socket.once('close', settle);
    upgrade(request, socket, head, settle).catch((error: unknown) => {
      settle();
      refuse(socket, error);
    });
  });

  app.addHook('onClose', async () => {
    for (const socket of pending) socket.destroy();
    for (const client of wss.clients) client.terminate();
    wss.close();
  });
}

/** A RegExp matching the table's path, each {param} one path segment (captured). */
function pathPattern(path: string): RegExp {
  const parts = path.split(/\{\w+\}/).map((literal) => literal.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  return new RegExp(`^${parts.join('([^/]+)')}$`);
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new RoostError('VALIDATION_FAILED', 'the path has a malformed percent-escape');
  }
}
