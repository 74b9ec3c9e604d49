// One SSH server (ssh2) for every sandbox: the SSH user names the sandbox, a registered key of
// its owner opens it, and each channel becomes a process or a relay inside the sandbox. No sshd
// runs in any image.
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import ssh2 from 'ssh2';
import type { AuthContext, Connection } from 'ssh2';
import type { AuthService, Logger, SandboxService } from '@roost/core';
import { Forwarding } from './forwarding.js';
import type { HostKey } from './host-keys.js';
import { FailureLimiter } from './rate-limit.js';
import { SshSession, type Login } from './session.js';
import { parseSshUsername } from './usernames.js';

const { Server, utils } = ssh2;

export interface SshGatewayDeps {
  auth: AuthService;
  sandboxes: SandboxService;
  hostKeys: HostKey[];
  logger: Logger;
  /** Failed logins per source address before it is refused for `windowMs` (default 20 per minute). */
  limits?: { maxFailures: number; windowMs: number };
  /**
   * The gateway pings each client this often and drops one that leaves `countMax` pings in a
   * row unanswered (default 15 s × 4): a vanished laptop's processes get their hang-up.
   */
  keepalive?: { intervalMs: number; countMax: number };
}

/** Every refused login takes at least this long, whatever was wrong (unknown sandbox or key). */
const refusalFloorMs = 25;

export class SshGateway {
  private readonly server: InstanceType<typeof Server>;
  private readonly limiter: FailureLimiter;
  private readonly connections = new Set<Connection>();

  constructor(private readonly deps: SshGatewayDeps) {
    this.limiter = new FailureLimiter(deps.limits ?? { maxFailures: 20, windowMs: 60_000 });
    const keepalive = deps.keepalive ?? { intervalMs: 15_000, countMax: 4 };
    this.server = new Server(
      // keepaliveInterval/CountMax are ssh2 server options its type declaration lacks.
      {
        hostKeys: deps.hostKeys.map((key) => key.privateKey),
        ident: 'Roost',
        ...{ keepaliveInterval: keepalive.intervalMs, keepaliveCountMax: keepalive.countMax },
      },
      (client, info) => this.onConnection(client, info.ip),
    );
    this.server.on('error', (error: Error) => deps.logger.error({ err: error.message }, 'SSH server error'));
  }

  listen(host: string, port: number): Promise<{ port: number }> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve({ port: (this.server.address() as AddressInfo).port });
      });
    });
  }

  /**
   * Serves one SSH connection arriving over another transport (the HTTP port's WebSocket);
   * `remoteAddress` is the client's, for the failure limit and the log.
   */
  acceptStream(stream: Duplex, remoteAddress: string): void {
    Object.assign(stream, { remoteAddress, remotePort: 0, remoteFamily: remoteAddress.includes(':') ? 'IPv6' : 'IPv4' });
    this.server.injectSocket(stream as never);
  }

  async close(): Promise<void> {
    for (const connection of this.connections) connection.end();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private onConnection(client: Connection, source: string): void {
    const { logger } = this.deps;
    this.connections.add(client);
    // SSH is many small request/answer packets: Nagle's algorithm against the client's delayed
    // ACK cost ~40 ms per round trip (`ssh box true` went from 111 ms to 47 ms).
    // (ssh2's server Connection has setNoDelay; its type declaration lacks it.)
    (client as unknown as { setNoDelay(noDelay: boolean): void }).setNoDelay(true);
    let login: Login | undefined;
    client.on('error', (error: Error & { level?: string }) => {
      logger.debug({ source, err: error.message }, 'SSH connection error');
      // ssh2 answers a keepalive timeout with a polite end(), which waits for a peer that is
      // gone; cut the socket so the channels close and their processes get the hang-up.
      if (error.level === 'client-timeout') (client as unknown as { _sock?: { destroy(): void } })._sock?.destroy();
    });
    client.on('close', () => this.connections.delete(client));
    client.on('authentication', (ctx) => {
      void this.authenticate(ctx, source).then((result) => {
        if (!result) return;
        // Before accept(): ssh2 emits 'ready' from inside it.
        login = result;
        ctx.accept();
      });
    });
    client.on('ready', () => {
      if (!login) return client.end();
      const current = login;
      logger.info({ source, userId: current.user.id, sandboxId: current.sandbox.id, unixUser: current.unixUser }, 'SSH login');
      const deps = { connection: client, login: current, sandboxes: this.deps.sandboxes, logger };
      client.on('session', (accept) => new SshSession(accept(), deps));
      const forwarding = new Forwarding(deps);
      client.on('tcpip', (accept, reject, info) => forwarding.direct(accept, reject, { host: info.destIP, port: info.destPort }));
      client.on('openssh.streamlocal', (accept, reject, info) => forwarding.direct(accept, reject, { path: info.socketPath }));
      client.on('request', (accept, reject, name, info) => forwarding.request(accept, reject, name, info));
      client.on('close', () => void forwarding.close());
    });
  }

  /**
   * Public keys only; resolves with the login for the caller to accept. Whatever is wrong
   * (blocked source, unknown key, unknown sandbox, another user's sandbox), the answer is the
   * same refusal after the same floor of time.
   */
  private async authenticate(ctx: AuthContext, source: string): Promise<Login | undefined> {
    const started = Date.now();
    const refuse = async (counts: boolean) => {
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
      this.deps.logger.warn({ source }, 'SSH login refused: too many failures from this address');
      return refuse(false);
    }
    const target = parseSshUsername(ctx.username);
    const user = await this.deps.auth.userForSshKey(ctx.key.data);
    // Looked up even without a user, so both failures cost the same.
    const sandbox = target && (await this.deps.sandboxes.get(user?.id ?? '', target.sandbox).catch(() => undefined));
    if (!user || !target || !sandbox) return refuse(true);
    if (ctx.signature === undefined) {
      // The client asks whether this key would do; it signs next.
      ctx.accept();
      return undefined;
    }
    // The key was matched by its fingerprint above; here the client proves it holds it.
    const offered = utils.parseKey(`${ctx.key.algo} ${ctx.key.data.toString('base64')}`);
    const valid = !(offered instanceof Error) && offered.verify(ctx.blob!, ctx.signature, ctx.hashAlgo) === true;
    if (!valid) return refuse(true);
    return { user, sandbox, unixUser: target.unixUser ?? sandbox.defaultUser };
  }
}
