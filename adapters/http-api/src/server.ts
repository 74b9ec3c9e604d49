// The HTTP API: fastify routes over core's services, validated with the contract's schemas.
import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import {
  buildOpenApiDocument,
  FrameKind,
  routes,
  type RouteName,
  type RouteSpec,
  bytesPerGb,
  type Sandbox,
  type SshInfo,
  type Workspace,
  type SshKey,
} from '@roost/contract';
import {
  RoostError,
  type AuthService,
  type ExecSession,
  type Quotas,
  type SandboxRecord,
  type SandboxService,
  type SshKeyRecord,
  type UserRecord,
  type WorkspaceService,
  type WorkspaceSnapshot,
  type WorkspaceView,
} from '@roost/core';
import { toHttpError } from './errors.js';
import { answerJsonResult, prefersJson } from './json-result.js';
import { answerClientError, guardConnections, serverOptions, type HttpLimits } from './limits.js';
import { bearerToken, parse } from './request.js';
import { execOptsOf, gbToBytes, runOptsOf, sandboxOptsOf } from './command-opts.js';
import { StreamResponse, type FrameSink, type SessionFrames } from './stream-response.js';
import { serveUpgrades } from './upgrades.js';

export interface HttpApiDeps {
  sandboxes: SandboxService;
  /** Absent: the daemon runs without workspaces (their routes answer WORKSPACES_UNAVAILABLE). */
  workspaces?: WorkspaceService;
  auth: AuthService;
  quotas: Quotas;
  logger: FastifyBaseLogger;
  version: string;
  /** e.g. "crun 1.8.1", shown by /healthz */
  runtimeName: string;
  /** Told only to clients on the daemon's host, so `roost login` there needs no pasting. */
  adminTokenFile: string;
  /** The data dir, absolute; told to loopback clients so `roost login` can check the token file is inside. */
  dataDir: string;
  /** Where the SSH gateway listens (known once it does) and its host keys. */
  sshInfo(): SshInfo;
  /**
   * Hands an SSH connection that arrived over a WebSocket to the gateway, bound to the sandbox
   * the tunnel was opened for.
   */
  acceptSshStream(stream: Duplex, remoteAddress: string, sandboxId: string): void;
  limits: HttpLimits;
}

/** A route fastify registered (HEAD twins included), as the auth test walks them. */
export interface RegisteredRoute {
  method: string;
  url: string;
}

export interface HttpApi {
  app: FastifyInstance;
  /** Every route fastify registered, filled as they are. */
  registeredRoutes: readonly RegisteredRoute[];
}

declare module 'fastify' {
  interface FastifyRequest {
    user?: UserRecord;
  }
}

/** Builds the app; the caller decides where it listens. */
export function buildHttpApi(deps: HttpApiDeps): HttpApi {
  const app = Fastify({
    loggerInstance: deps.logger,
    genReqId: () => `req_${randomBytes(6).toString('hex')}`,
    ...serverOptions(deps.limits),
    clientErrorHandler: answerClientError,
    // A path fastify's router cannot decode, or a parameter past maxParamLength: the API's error body.
    frameworkErrors: (error, request, reply: FastifyReply) => {
      const httpError = toHttpError(error, request.id);
      void reply.status(httpError.status).send(httpError.body);
    },
  });
  guardConnections(app.server, deps.limits, deps.logger);
  const { sandboxes, auth } = deps;
  const openApiDocument = buildOpenApiDocument(deps.version);
  const registeredRoutes: RegisteredRoute[] = [];
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) registeredRoutes.push({ method, url: route.url });
  });

  // Deny by default: public only where the route table says so. A path no route matches needs a
  // token too, so an anonymous client learns nothing from it.
  app.addHook('onRequest', async (request) => {
    if (routeOf(request)?.public) return;
    request.user = await auth.authenticate(bearerToken(request.headers.authorization));
  });

  app.setErrorHandler((error, request, reply) => {
    const httpError = toHttpError(error, request.id);
    if (httpError.internal) request.log.error({ err: error }, 'request failed');
    void reply.status(httpError.status).send(httpError.body);
  });
  app.setNotFoundHandler((request, reply) => {
    const httpError = toHttpError(new RoostError('NOT_FOUND', `no route ${request.method} ${request.url}`), request.id);
    void reply.status(404).send(httpError.body);
  });

  /** Where fastify mounts a route of the table; `routeName` lets the auth hook look it up. */
  const mount = (name: RouteName) => ({
    method: routes[name].method,
    url: routes[name].path.replace(/\{(\w+)\}/g, ':$1'),
    config: { routeName: name },
  });
  const on = <N extends RouteName>(name: N, handler: (request: FastifyRequest) => Promise<unknown>) => {
    const route = routes[name];
    app.route({
      ...mount(name),
      handler: async (request, reply) => {
        const result = await handler(request);
        if (reply.sent) return;
        if (route.success.status === 204) return reply.status(204).send();
        return reply.status(route.success.status).send(result);
      },
    });
  };

  on('health', async (request) => ({
    status: 'ok',
    version: deps.version,
    runtime: deps.runtimeName,
    ...(isLoopback(request.ip) && { adminTokenFile: deps.adminTokenFile, dataDir: deps.dataDir }),
  }));
  on('openApi', async () => openApiDocument);

  on('whoami', async (request) => {
    const user = userOf(request);
    return { user: { id: user.id, name: user.name, isAdmin: user.isAdmin } };
  });
  on('doctor', async (request) => ({ runtime: deps.runtimeName, ...(await sandboxes.diagnose(userOf(request))) }));
  on('sshInfo', async () => deps.sshInfo());
  on('sshTunnel', async () => {
    throw new RoostError('VALIDATION_FAILED', 'this route is a WebSocket: connect with `roost proxy <sandbox>` (Upgrade: websocket)');
  });
  for (const name of ['execWebSocket', 'runWebSocket'] as const) {
    on(name, async () => {
      throw new RoostError('VALIDATION_FAILED', `this route is a WebSocket (Upgrade: websocket); without one, POST ${routes[name].path}`);
    });
  }
  serveUpgrades(app, { ...deps, streamSession, toApiSandbox });
  on('listSshKeys', async (request) => ({ keys: (await auth.listSshKeys(userOf(request).id)).map(toApiSshKey) }));
  on('addSshKey', async (request) => {
    const body = parse(routes.addSshKey.body, request.body);
    const { key, alreadyRegistered } = await auth.addSshKey(userOf(request).id, body.publicKey, body.name);
    return { ...toApiSshKey(key), alreadyRegistered };
  });
  on('removeSshKey', async (request) => {
    const { ref } = parse(routes.removeSshKey.params, request.params);
    await auth.removeSshKey(userOf(request).id, ref);
  });
  on('myQuota', async (request) => deps.quotas.view(userOf(request)));
  on('getUserQuota', async (request) => {
    const { user } = parse(routes.getUserQuota.params, request.params);
    return deps.quotas.viewOf(userOf(request), user);
  });
  on('updateUserQuota', async (request) => {
    const { user } = parse(routes.updateUserQuota.params, request.params);
    const body = parse(routes.updateUserQuota.body, request.body);
    const view = await deps.quotas.change(userOf(request), user, body);
    request.log.info({ userId: view.user.id, change: body }, 'quota changed');
    return view;
  });
  on('createSandbox', async (request) => {
    const body = parse(routes.createSandbox.body, request.body);
    return toApiSandbox(await sandboxes.create(userOf(request).id, sandboxOptsOf(body)));
  });
  on('listSandboxes', async (request) => {
    const query = parse(routes.listSandboxes.query, request.query);
    const list = await sandboxes.list(userOf(request).id, { all: query.all === 'true' });
    return { sandboxes: list.map(toApiSandbox) };
  });
  on('getSandbox', async (request) => {
    const { ref } = parse(routes.getSandbox.params, request.params);
    return withWorkspace(await sandboxes.get(userOf(request).id, ref));
  });
  on('removeSandbox', async (request) => {
    const { ref } = parse(routes.removeSandbox.params, request.params);
    await sandboxes.remove(userOf(request).id, ref);
  });
  on('updateSandbox', async (request) => {
    const { ref } = parse(routes.updateSandbox.params, request.params);
    const body = parse(routes.updateSandbox.body, request.body);
    return toApiSandbox(await sandboxes.update(userOf(request).id, ref, body));
  });
  on('stopSandbox', async (request) => {
    const { ref } = parse(routes.stopSandbox.params, request.params);
    return withWorkspace(await sandboxes.stop(userOf(request).id, ref));
  });
  on('startSandbox', async (request) => {
    const { ref } = parse(routes.startSandbox.params, request.params);
    return withWorkspace(await sandboxes.start(userOf(request).id, ref));
  });
  on('restartSandbox', async (request) => {
    const { ref } = parse(routes.restartSandbox.params, request.params);
    return withWorkspace(await sandboxes.restart(userOf(request).id, ref));
  });

  /** A sandbox with its workspace's disk use and sync state, for the answers about one sandbox. */
  const withWorkspace = async (sandbox: SandboxRecord): Promise<Sandbox> => {
    const view = await sandboxes.workspaceOf(sandbox);
    return { ...toApiSandbox(sandbox), ...(view && { workspace: toApiWorkspace(view) }) };
  };
  const workspacesOf = (): WorkspaceService => {
    if (!deps.workspaces) throw new RoostError('WORKSPACES_UNAVAILABLE', 'this daemon runs without workspaces');
    return deps.workspaces;
  };
  on('resizeSandbox', async (request) => {
    const { ref } = parse(routes.resizeSandbox.params, request.params);
    const body = parse(routes.resizeSandbox.body, request.body);
    const sandbox = await sandboxes.resize(userOf(request).id, ref, body.diskGb === null ? null : gbToBytes(body.diskGb));
    return withWorkspace(sandbox);
  });
  on('syncSandbox', async (request) => {
    const { ref } = parse(routes.syncSandbox.params, request.params);
    const { sandbox, snapshot } = await sandboxes.sync(userOf(request).id, ref);
    return { sandbox: await withWorkspace(await sandboxes.get(userOf(request).id, sandbox.id)), snapshot: toApiSnapshot(snapshot) };
  });
  on('listWorkspaces', async (request) => ({ workspaces: (await workspacesOf().list(userOf(request).id)).map(toApiWorkspace) }));
  on('getWorkspace', async (request) => {
    const { ref } = parse(routes.getWorkspace.params, request.params);
    return toApiWorkspace(await workspacesOf().show(userOf(request).id, ref));
  });
  on('deleteWorkspace', async (request) => {
    const { ref } = parse(routes.deleteWorkspace.params, request.params);
    await workspacesOf().remove(userOf(request).id, ref);
  });
  on('forkWorkspace', async (request) => {
    const { ref } = parse(routes.forkWorkspace.params, request.params);
    const body = parse(routes.forkWorkspace.body, request.body);
    const workspaces = workspacesOf();
    const record = await workspaces.fork(userOf(request).id, ref, body.name, body.diskGb === undefined ? {} : { diskBytes: gbToBytes(body.diskGb) });
    return toApiWorkspace(await workspaces.view(record));
  });
  on('listWorkspaceSnapshots', async (request) => {
    const { ref } = parse(routes.listWorkspaceSnapshots.params, request.params);
    const workspaces = workspacesOf();
    const { record, snapshots } = await workspaces.snapshots(userOf(request).id, ref);
    return { workspace: toApiWorkspace(await workspaces.view(record)), snapshots: snapshots.map(toApiSnapshot) };
  });
  on('restoreWorkspace', async (request) => {
    const { ref } = parse(routes.restoreWorkspace.params, request.params);
    const body = parse(routes.restoreWorkspace.body, request.body);
    const workspaces = workspacesOf();
    return toApiWorkspace(await workspaces.view(await workspaces.restore(userOf(request).id, ref, body.snapshot)));
  });
  on('pruneSandboxes', async (request) => {
    const body = parse(routes.pruneSandboxes.body, request.body);
    return { removed: (await sandboxes.prune(userOf(request).id, body)).map(toApiSandbox) };
  });

  app.route({
    ...mount('exec'),
    handler: async (request, reply) => {
      const { ref } = parse(routes.exec.params, request.params);
      const body = parse(routes.exec.body, request.body);
      const session = await sandboxes.exec(userOf(request).id, ref, execOptsOf(body));
      if (prefersJson(request.headers.accept)) {
        const source = { output: session.output, finish: () => session.done, cancel: () => session.cancel('client disconnected') };
        return answerJsonResult(request, reply, source, deps.limits.maxJsonOutputBytes);
      }
      reply.hijack();
      await streamSession(request, new StreamResponse(reply.raw, () => session.cancel('client disconnected'), request.log), session);
    },
  });

  app.route({
    ...mount('run'),
    handler: async (request, reply) => {
      const body = parse(routes.run.body, request.body);
      const session = await sandboxes.run(userOf(request).id, runOptsOf(body));
      if (prefersJson(request.headers.accept)) {
        const finish = async () => {
          const exit = await session.done;
          // The record as the run left it (the first one, if its owner removed it meanwhile), as the stream's last sandbox frame.
          return { ...exit, sandbox: toApiSandbox(await session.ended) };
        };
        const source = { output: session.output, finish, cancel: () => session.cancel('client disconnected; the script was killed') };
        return answerJsonResult(request, reply, source, deps.limits.maxJsonOutputBytes);
      }
      reply.hijack();
      const stream = new StreamResponse(reply.raw, () => session.cancel('client disconnected; the script was killed'), request.log);
      // The client may have gone while the sandbox was being made.
      if (request.raw.socket.destroyed) session.cancel('client disconnected; the script was killed');
      await streamSession(request, stream, session, {
        first: { kind: FrameKind.sandbox, value: toApiSandbox(session.sandbox) },
        // Before the exit frame, the sandbox as the run left it (status, exit code).
        last: async () => ({ kind: FrameKind.sandbox, value: toApiSandbox(await session.ended) }),
      });
    },
  });

  app.route({
    ...mount('logs'),
    handler: async (request, reply) => {
      const { ref } = parse(routes.logs.params, request.params);
      const query = parse(routes.logs.query, request.query);
      const owner = userOf(request).id;
      const sandbox = await sandboxes.getWithLogs(owner, ref);
      const clientGone = new AbortController();
      const chunks = sandboxes.logs.read(sandbox, { follow: query.follow === 'true', signal: clientGone.signal });
      const exit = async () => {
        const ended = await sandboxes.get(owner, sandbox.id);
        return { exitCode: ended.exitCode ?? 0, ...(ended.statusReason && { reason: ended.statusReason }) };
      };
      if (prefersJson(request.headers.accept)) {
        return answerJsonResult(request, reply, { output: chunks, finish: exit, cancel: () => clientGone.abort() }, deps.limits.maxJsonOutputBytes);
      }
      reply.hijack();
      const stream = new StreamResponse(reply.raw, () => clientGone.abort(), request.log);
      try {
        for await (const chunk of chunks) {
          if (stream.aborted) return;
          await stream.output(chunk);
        }
        stream.end(FrameKind.exit, await exit());
      } catch (error) {
        stream.fail(toHttpError(error, request.id).body);
      }
    },
  });

  return { app, registeredRoutes };
}

/** Streams a session's output and exit; after the hijack nothing may throw (fastify could not answer it). */
async function streamSession(
  request: Pick<FastifyRequest, 'id' | 'log'>,
  stream: FrameSink,
  session: ExecSession,
  extra: SessionFrames = {},
): Promise<void> {
  try {
    if (extra.first) await stream.json(extra.first.kind, extra.first.value);
    for await (const chunk of session.output) {
      if (stream.aborted) break;
      await stream.output(chunk);
    }
    const result = await session.done;
    if (extra.last && !stream.aborted) {
      const last = await extra.last();
      await stream.json(last.kind, last.value);
    }
    stream.end(FrameKind.exit, result);
  } catch (error) {
    const httpError = toHttpError(error, request.id);
    if (httpError.internal) request.log.error({ err: error }, 'stream failed');
    stream.fail(httpError.body);
  }
}

function routeOf(request: FastifyRequest): RouteSpec | undefined {
  const name = (request.routeOptions.config as { routeName?: RouteName } | undefined)?.routeName;
  return name ? routes[name] : undefined;
}

function userOf(request: FastifyRequest): UserRecord {
  if (!request.user) throw new RoostError('UNAUTHENTICATED', 'this request needs a token');
  return request.user;
}

function isLoopback(ip: string): boolean {
  return ip === '127.0.0.1' || ip === '::1' || ip === '::ffff:127.0.0.1';
}

function toApiSshKey(key: SshKeyRecord): SshKey {
  return {
    id: key.id,
    name: key.name,
    type: key.type,
    fingerprint: key.fingerprint,
    createdAt: key.createdAt.toISOString(),
    lastUsedAt: key.lastUsedAt?.toISOString() ?? null,
  };
}

export function toApiSandbox(sandbox: SandboxRecord): Sandbox {
  return {
    id: sandbox.id,
    name: sandbox.name,
    image: sandbox.image,
    status: sandbox.status,
    statusReason: sandbox.statusReason,
    logTrimmedBytes: sandbox.logTrimmedBytes,
    exitCode: sandbox.exitCode,
    persistent: sandbox.persistent,
    cpus: sandbox.limits.cpus,
    memoryMb: sandbox.limits.memoryMb,
    pidsLimit: sandbox.limits.pids,
    openFiles: sandbox.limits.openFiles,
    network: sandbox.network,
    sshAgentForwarding: sandbox.sshAgentForwarding,
    defaultUser: sandbox.defaultUser,
    allowNet: sandbox.egress.allow,
    denyNet: sandbox.egress.deny,
    workspaceId: sandbox.workspaceId,
    createdAt: sandbox.createdAt.toISOString(),
    updatedAt: sandbox.updatedAt.toISOString(),
  };
}

export function toApiWorkspace(view: WorkspaceView): Workspace {
  const { record, usage, sync, usedBy } = view;
  return {
    id: record.id,
    name: record.name,
    diskGb: record.diskBytes === null ? null : record.diskBytes / bytesPerGb,
    baseId: record.baseId,
    createdAt: record.createdAt.toISOString(),
    updatedAt: record.updatedAt.toISOString(),
    lastUsedAt: record.lastUsedAt?.toISOString() ?? null,
    usedBy,
    usedBytes: usage.usedBytes,
    limitBytes: usage.limitBytes,
    lastSyncedAt: sync.lastSyncedAt?.toISOString() ?? null,
    pendingBytes: sync.pendingBytes,
    failingSince: sync.failingSince?.toISOString() ?? null,
    failure: sync.failure,
  };
}

function toApiSnapshot(snapshot: WorkspaceSnapshot) {
  return { id: snapshot.id, takenAt: snapshot.takenAt.toISOString(), bytes: snapshot.bytes, files: snapshot.files };
}
