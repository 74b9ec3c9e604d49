// Port forwarding of one SSH connection, always inside the sandbox's own network namespace and
// as the session's unix user: -L/-W/-D (direct-tcpip, direct-streamlocal) connect from inside
// the sandbox; -R (tcpip-forward, streamlocal-forward) listens inside it. The host's network is
// never reached, and a user who may not bind port 80 or open root's socket in the sandbox
// cannot do it through SSH either.
import type { ServerChannel } from 'ssh2';
import type { SandboxAddress, SandboxListener } from '@roost/core';
import { relay, relayToClient } from './channels.js';
import type { ConnectionDeps } from './session.js';

/** What an SSH client means by a bind or destination host, inside the sandbox. */
function sandboxHost(host: string): string {
  if (host === 'localhost' || host === 'ip6-localhost') return '127.0.0.1';
  if (host === '' || host === '*') return '0.0.0.0';
  return host;
}

export class Forwarding {
  /** Listeners of -R, by "addr:port" as the client asked (for cancel) or by socket path. */
  private readonly listeners = new Map<string, SandboxListener>();
  /** -R requests being set up, counted against the limit with the listeners. */
  private pending = 0;
  private closed = false;

  constructor(private readonly deps: ConnectionDeps) {}

  /** A channel to an address inside the sandbox; refused (as sshd does) when nothing answers. */
  direct(accept: () => ServerChannel, reject: () => void, address: SandboxAddress): void {
    const { sandboxes, login, logger, channels } = this.deps;
    if (!channels.take()) {
      logger.debug({ sandboxId: login.sandbox.id }, 'SSH forward refused: too many channels on this connection');
      reject();
      return;
    }
    const target = 'path' in address ? address : { host: sandboxHost(address.host), port: address.port };
    sandboxes
      .ensureAwake(login.user.id, login.sandbox.id)
      .then((sandbox) => sandboxes.connect(sandbox, target, { user: login.unixUser }))
      .then(
        (stream) => {
          stream.on('error', () => stream.destroy());
          const channel = accept();
          channels.holdUntilClosed(channel, relay(stream, channel));
        },
        (error: Error) => {
          channels.give();
          logger.debug({ sandboxId: login.sandbox.id, target, err: error.message }, 'SSH forward: connect failed');
          reject();
        },
      )
      .catch((error: Error) => logger.debug({ sandboxId: login.sandbox.id, err: error.message }, 'SSH forward: the connection ended meanwhile'));
  }

  /** Global requests: -R listeners and their cancels. */
  request(
    accept: ((port?: number) => void) | undefined,
    reject: (() => void) | undefined,
    name: string,
    info: { bindAddr?: string; bindPort?: number; socketPath?: string },
  ): void {
    const { logger, login } = this.deps;
    // The client may be gone by the time the answer is ready: ssh2 then throws.
    const answer = (fn: () => void) => {
      try {
        fn();
      } catch (error) {
        logger.debug({ sandboxId: login.sandbox.id, err: (error as Error).message }, 'SSH global request: the connection ended meanwhile');
      }
    };
    const ok = (port?: number) => answer(() => accept?.(port));
    const no = (error?: Error) => {
      if (error) logger.debug({ sandboxId: login.sandbox.id, request: name, err: error.message }, 'SSH global request refused');
      answer(() => reject?.());
    };
    if (name === 'tcpip-forward' && info.bindAddr !== undefined && info.bindPort !== undefined) {
      this.limited(() => this.listenTcp(info.bindAddr!, info.bindPort!)).then(ok, no);
    } else if (name === 'cancel-tcpip-forward') {
      this.cancel(`${info.bindAddr}:${info.bindPort}`).then(() => ok(), no);
    } else if (name === 'streamlocal-forward@openssh.com' && info.socketPath) {
      this.limited(() => this.listenUnix(info.socketPath!)).then(() => ok(), no);
    } else if (name === 'cancel-streamlocal-forward@openssh.com' && info.socketPath) {
      this.cancel(info.socketPath).then(() => ok(), no);
    } else no();
  }

  /** Runs a -R set-up within the connection's limit of listeners. */
  private async limited<T>(setUp: () => Promise<T>): Promise<T> {
    if (this.listeners.size + this.pending >= this.deps.limits.maxRemoteForwards) {
      throw new Error(`at most ${this.deps.limits.maxRemoteForwards} remote forwards per connection`);
    }
    this.pending++;
    try {
      return await setUp();
    } finally {
      this.pending--;
    }
  }

  private async listenTcp(bindAddr: string, bindPort: number): Promise<number> {
    const { connection, sandboxes, login, channels } = this.deps;
    const sandbox = await sandboxes.ensureAwake(login.user.id, login.sandbox.id);
    let port = bindPort;
    const listener = await sandboxes.listen(sandbox, {
      address: { host: sandboxHost(bindAddr), port: bindPort },
      user: login.unixUser,
      onConnection: (stream, peer) => {
        // The client matches forwarded channels by the address and port it asked for.
        relayToClient(channels, stream, (callback) => connection.forwardOut(bindAddr, port, peer?.host ?? '127.0.0.1', peer?.port ?? 0, callback));
      },
    });
    port = 'port' in listener.address ? listener.address.port : bindPort;
    // Port 0 asks for any port: the client cancels it by the port it was given.
    await this.keep(`${bindAddr}:${port}`, listener);
    this.deps.logger.info({ sandboxId: sandbox.id, bind: `${bindAddr}:${port}`, unixUser: login.unixUser }, 'SSH remote forward listening inside the sandbox');
    return port;
  }

  private async listenUnix(path: string): Promise<void> {
    const { connection, sandboxes, login, channels } = this.deps;
    const sandbox = await sandboxes.ensureAwake(login.user.id, login.sandbox.id);
    const listener = await sandboxes.listen(sandbox, {
      address: { path },
      user: login.unixUser,
      onConnection: (stream) => relayToClient(channels, stream, (callback) => connection.openssh_forwardOutStreamLocal(path, callback)),
    });
    await this.keep(path, listener);
  }

  /** Keeps a new listener, unless the connection ended while it was set up (or the key is taken). */
  private async keep(key: string, listener: SandboxListener): Promise<void> {
    if (this.closed || this.listeners.has(key)) {
      await listener.close();
      throw new Error(this.closed ? 'the connection ended' : `already forwarding ${key}`);
    }
    this.listeners.set(key, listener);
  }

  private async cancel(key: string): Promise<void> {
    const listener = this.listeners.get(key);
    if (!listener) throw new Error(`no forward ${key}`);
    this.listeners.delete(key);
    await listener.close();
  }

  /** The connection ended: its listeners go with it. */
  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.listeners.values()];
    this.listeners.clear();
    await Promise.allSettled(all.map((listener) => listener.close()));
  }
}
