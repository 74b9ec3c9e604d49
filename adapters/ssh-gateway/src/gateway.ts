// One SSH server (ssh2) for every sandbox: the SSH user names the sandbox, a registered key of
// its owner opens it, and each channel becomes a process or a relay inside the sandbox. No sshd
// runs in any image.
import { createServer, type AddressInfo, type Server as NetServer } from 'node:net';
import type { Duplex } from 'node:stream';
import ssh2 from 'ssh2';
import type { AuthContext, Connection } from 'ssh2';
import { ConnectionCaps, type Admission, type AuthService, type Logger, type SandboxService } from '@roost/core';
import { ThrottledWarning } from './throttled-warning.js';
import { ChannelBudget } from './channels.js';
import { Forwarding } from './forwarding.js';
import type { HostKey } from './host-keys.js';
import { FailureLimiter } from './rate-limit.js';
import { SshSession, type Login } from './session.js';
import { parseSshUsername, parseTunnelUsername } from './usernames.js';

const { Server, utils } = ssh2;

/** What one client may make the gateway hold. Every count has a bound. */
export interface SshGatewayLimits {
  /** Failed logins per source (IPv4 address, IPv6 /64) before it is refused, within `failureWindowMs`. */
  maxFailures: number;
  failureWindowMs: number;
  /** A connection that has not logged in this long after its first byte is cut. */
  loginTimeoutMs: number;
  /** Connections not logged in yet, per source and in all; past either, new ones are closed at once. */
  maxUnauthenticatedPerSource: number;
  maxUnauthenticated: number;
  /** Refused login attempts on one connection before it is closed (OpenSSH's MaxAuthTries). */
  maxAuthTries: number;
  /** Channels open at once on one connection: sessions, forwards, agent and X11 channels. */
  maxChannelsPerConnection: number;
  /** -R listeners (tcpip-forward, streamlocal-forward) one connection may hold. */
  maxRemoteForwards: number;
  /** Variables one session may set with `env` requests. */
  maxEnvPerSession: number;
}

export const defaultSshGatewayLimits: SshGatewayLimits = {
  maxFailures: 20,
  failureWindowMs: 60_000,
  loginTimeoutMs: 20_000,
  maxUnauthenticatedPerSource: 32,
  maxUnauthenticated: 512,
  maxAuthTries: 10,
  maxChannelsPerConnection: 256,
  maxRemoteForwards: 32,
  maxEnvPerSession: 32,
};

export interface SshGatewayDeps {
  auth: AuthService;
  sandboxes: SandboxService;
  hostKeys: HostKey[];
  logger: Logger;
  /** Defaults: `defaultSshGatewayLimits`. */
  limits?: Partial<SshGatewayLimits>;
  /**
   * The gateway pings each client this often and drops one that leaves `countMax` pings in a
   * row unanswered (default 15 s × 4): a vanished laptop's processes get their hang-up.
   */
  keepalive?: { intervalMs: number; countMax: number };
}

/** Every refused login takes at least this long, whatever was wrong (unknown sandbox or key). */
const refusalFloorMs = 25;
/** Warnings a flood could repeat (refused connections, blocked sources) are logged at most this often. */
const floodLogIntervalMs = 10_000;

/** ssh2's server Connection, with what its type declaration lacks. */
type ClientConnection = Connection & { setNoDelay(noDelay: boolean): void; _sock?: Duplex };

export class SshGateway {
  private readonly server: InstanceType<typeof Server>;
  /** Accepts TCP connections and hands them to ssh2 once admitted. */
  private readonly listener: NetServer;
  private readonly limits: SshGatewayLimits;
  private readonly limiter: FailureLimiter;
  private readonly admission: ConnectionCaps;
  /** Admitted connections that have not logged in yet, by their socket. */
  private readonly pendingLogins = new Map<Duplex, Admission>();
  /** Connections from `roost proxy` tunnels: the sandbox each was opened for. */
  private readonly tunnelSandboxes = new WeakMap<Duplex, string>();
  private readonly connections = new Set<Connection>();
  private readonly refusedWarning: ThrottledWarning;
  private readonly deadlineWarning: ThrottledWarning;
  private readonly blockedWarning: ThrottledWarning;

  constructor(private readonly deps: SshGatewayDeps) {
    const { logger } = deps;
    this.limits = { ...defaultSshGatewayLimits, ...deps.limits };
    this.limiter = new FailureLimiter({ maxFailures: this.limits.maxFailures, windowMs: this.limits.failureWindowMs });
    this.admission = new ConnectionCaps({ maxPerSource: this.limits.maxUnauthenticatedPerSource, maxTotal: this.limits.maxUnauthenticated });
    this.refusedWarning = new ThrottledWarning(floodLogIntervalMs, (fields) => logger.warn(fields, 'SSH connection refused: too many connections not logged in yet'));
    this.deadlineWarning = new ThrottledWarning(floodLogIntervalMs, (fields) => logger.info(fields, 'SSH connection cut: no login within the deadline'));
    this.blockedWarning = new ThrottledWarning(floodLogIntervalMs, (fields) => logger.warn(fields, 'SSH login refused: too many failures from this address'));
    const keepalive = deps.keepalive ?? { intervalMs: 15_000, countMax: 4 };
    this.server = new Server(
      // keepaliveInterval/CountMax are ssh2 server options its type declaration lacks.
      {
        hostKeys: deps.hostKeys.map((key) => key.privateKey),
        ident: 'Roost',
        ...{ keepaliveInterval: keepalive.intervalMs, keepaliveCountMax: keepalive.countMax },
      },
      (client, info) => this.onConnection(client as ClientConnection, info.ip),
    );
    this.server.on('error', (error: Error) => logger.error({ err: error.message }, 'SSH server error'));
    // ssh2 emits 'connection' only once a client has sent its version line: a client that
    // sends nothing would never meet a deadline there. So the gateway accepts the sockets itself.
    this.listener = createServer({ noDelay: true }, (socket) => this.admit(socket, socket.remoteAddress ?? ''));
    this.listener.on('error', (error: Error) => logger.error({ err: error.message }, 'SSH listener error'));
  }

  listen(host: string, port: number): Promise<{ port: number }> {
    return new Promise((resolve, reject) => {
      this.listener.once('error', reject);
      this.listener.listen(port, host, () => {
        this.listener.off('error', reject);
        resolve({ port: (this.listener.address() as AddressInfo).port });
      });
    });
  }

  /**
   * Serves one SSH connection arriving over another transport (the HTTP port's WebSocket);
   * `remoteAddress` is the client's, for the limits and the log. The tunnel was opened for one
   * sandbox, so that sandbox is the target whatever the SSH user name says (but a `+user` in it):
   * `Host roost-*` with `ProxyCommand roost proxy %n` then needs no per-sandbox `User` line, and
   * an IDE that sends the local user name still lands in the right sandbox. The key must still
   * belong to the sandbox's owner.
   */
  acceptStream(stream: Duplex, remoteAddress: string, sandboxId: string): void {
    Object.assign(stream, { remoteAddress, remotePort: 0, remoteFamily: remoteAddress.includes(':') ? 'IPv6' : 'IPv4' });
    this.tunnelSandboxes.set(stream, sandboxId);
    this.admit(stream, remoteAddress);
  }

  /** Connections not logged in yet (for tests and metrics). */
  get unauthenticated(): { total: number; sources: number } {
    return this.admission.counts;
  }

  async close(): Promise<void> {
    for (const connection of this.connections) connection.end();
    for (const socket of this.pendingLogins.keys()) socket.destroy();
    await new Promise<void>((resolve) => this.listener.close(() => resolve()));
  }

  /** Admits a new connection under the caps, with a login deadline, and hands it to ssh2. */
  private admit(socket: Duplex, source: string): void {
    const { logger } = this.deps;
    // A reset at any time, also before ssh2 listens: never an uncaught 'error'.
    socket.on('error', (error: Error) => logger.debug({ source, err: error.message }, 'SSH socket error'));
    const place = this.admission.admit(source);
    if (typeof place === 'string') {
      this.refusedWarning.note({ source, cap: place === 'source-full' ? 'per source' : 'total', ...this.admission.counts });
      socket.destroy();
      return;
    }
    const deadline = setTimeout(() => {
      try {
        this.deadlineWarning.note({ source, loginTimeoutMs: this.limits.loginTimeoutMs });
        socket.destroy();
      } catch (error) {
        logger.error({ source, err: (error as Error).message }, 'SSH login deadline failed');
      }
    }, this.limits.loginTimeoutMs);
    this.pendingLogins.set(socket, {
      release: () => {
        clearTimeout(deadline);
        place.release();
        this.pendingLogins.delete(socket);
      },
    });
    socket.once('close', () => this.pendingLogins.get(socket)?.release());
    this.server.injectSocket(socket as never);
  }

  private onConnection(client: ClientConnection, source: string): void {
    const { logger } = this.deps;
    this.connections.add(client);
    // SSH is many small request/answer packets: Nagle's algorithm against the client's delayed
    // ACK cost ~40 ms per round trip (`ssh box true` went from 111 ms to 47 ms).
    client.setNoDelay(true);
    let login: Login | undefined;
    const tries = { refused: 0 };
    const tunnelSandbox = client._sock && this.tunnelSandboxes.get(client._sock);
    client.on('error', (error: Error & { level?: string }) => {
      logger.debug({ source, err: error.message }, 'SSH connection error');
      // ssh2 answers a keepalive timeout with a polite end(), which waits for a peer that is
      // gone; cut the socket so the channels close and their processes get the hang-up.
      if (error.level === 'client-timeout') client._sock?.destroy();
    });
    client.on('close', () => this.connections.delete(client));
    client.on('authentication', (ctx) => {
      this.authenticate(ctx, source, tries, tunnelSandbox)
        .then((result) => {
          if (result) {
            // Before accept(): ssh2 emits 'ready' from inside it.
            login = result;
            ctx.accept();
          } else if (tries.refused >= this.limits.maxAuthTries) client.end();
        })
        .catch((error: Error) => {
          logger.error({ source, err: error.message }, 'SSH authentication failed unexpectedly');
          client._sock?.destroy();
        });
    });
    client.on('ready', () => {
      if (client._sock) this.pendingLogins.get(client._sock)?.release();
      if (!login) return client.end();
      const current = login;
      logger.info({ source, userId: current.user.id, sandboxId: current.sandbox.id, unixUser: current.unixUser }, 'SSH login');
      const channels = new ChannelBudget(this.limits.maxChannelsPerConnection);
      const deps = { connection: client, login: current, sandboxes: this.deps.sandboxes, logger, channels, limits: this.limits };
      client.on('session', (accept, reject) => {
        if (!channels.take()) return reject();
        const session = accept();
        session.once('close', () => channels.give());
        new SshSession(session, deps);
      });
      const forwarding = new Forwarding(deps);
      client.on('tcpip', (accept, reject, info) => forwarding.direct(accept, reject, { host: info.destIP, port: info.destPort }));
      client.on('openssh.streamlocal', (accept, reject, info) => forwarding.direct(accept, reject, { path: info.socketPath }));
      client.on('request', (accept, reject, name, info) => forwarding.request(accept, reject, name, info));
      client.on('close', () => {
        channels.closeAll();
        void forwarding.close();
      });
    });
  }

  /**
   * Public keys only; resolves with the login for the caller to accept. Whatever is wrong
   * (blocked source, unknown key, unknown sandbox, another user's sandbox, bad signature), the
   * answer is the same refusal after the same floor of time.
   */
  private async authenticate(ctx: AuthContext, source: string, tries: { refused: number }, tunnelSandbox: string | undefined): Promise<Login | undefined> {
    const started = Date.now();
    const refuse = async (counts: boolean) => {
      tries.refused++;
      if (counts) this.limiter.fail(source);
      const wait = refusalFloorMs - (Date.now() - started);
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      ctx.reject(['publickey']);
      return undefined;
    };
    // "none" is how every client starts: it learns the methods, nothing failed yet.
    if (ctx.method === 'none') {
      ctx.reject(['publickey']);
      return undefined;
    }
    if (ctx.method !== 'publickey') return refuse(false);
    if (this.limiter.blocked(source)) {
      this.blockedWarning.note({ source });
      return refuse(false);
    }
    const offered = utils.parseKey(`${ctx.key.algo} ${ctx.key.data.toString('base64')}`);
    if (offered instanceof Error) return refuse(false);
    if (ctx.signature === undefined) {
      // "Would this key do?" gets yes for every key, before anything is looked up: an answer
      // that depended on the key or the sandbox would tell whoever holds a public key (they
      // are public) which sandboxes exist and whose they are. The signed attempt decides.
      ctx.accept();
      return undefined;
    }
    // The client proves it holds the key; then the key names the user, who must own the sandbox.
    if (offered.verify(ctx.blob!, ctx.signature, ctx.hashAlgo) !== true) return refuse(true);
    const target = tunnelSandbox ? parseTunnelUsername(ctx.username, tunnelSandbox) : parseSshUsername(ctx.username);
    const user = await this.deps.auth.userForSshKey(ctx.key.data);
    // Looked up even without a user, so both failures cost the same.
    const sandbox = target && (await this.deps.sandboxes.get(user?.id ?? '', target.sandbox).catch(() => undefined));
    if (!user || !target || !sandbox) return refuse(true);
    return { user, sandbox, unixUser: target.unixUser ?? sandbox.defaultUser };
  }
}
