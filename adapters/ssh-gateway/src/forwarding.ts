// Port forwarding of one SSH connection, always inside the sandbox's own network namespace:
// -L/-W/-D (direct-tcpip, direct-streamlocal) connect from inside the sandbox; -R
// (tcpip-forward, streamlocal-forward) listens inside it. The host's network is never reached.
import type { ServerChannel } from 'ssh2';
import type { SandboxAddress, SandboxListener } from '@roost/core';
import { relay } from './channels.js';
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

  constructor(private readonly deps: ConnectionDeps) {}

  /** A channel to an address inside the sandbox; refused (as sshd does) when nothing answers. */
  direct(accept: () => ServerChannel, reject: () => void, address: SandboxAddress): void {
    const { sandboxes, login, logger } = this.deps;
    const target = 'path' in address ? address : { host: sandboxHost(address.host), port: address.port };
    sandboxes
      .ensureAwake(login.user.id, login.sandbox.id)
      .then((sandbox) => sandboxes.connect(sandbox, target))
      .then(
        (stream) => relay(stream, accept()),
        (error: Error) => {
          logger.debug({ sandboxId: login.sandbox.id, target, err: error.message }, 'SSH forward: connect failed');
          reject();
        },
      );
  }

  /** Global requests: -R listeners and their cancels. */
  request(
    accept: ((port?: number) => void) | undefined,
    reject: (() => void) | undefined,
    name: string,
    info: { bindAddr?: string; bindPort?: number; socketPath?: string },
  ): void {
    const ok = (port?: number) => accept?.(port);
    const no = () => reject?.();
    if (name === 'tcpip-forward' && info.bindAddr !== undefined && info.bindPort !== undefined) {
      void this.listenTcp(info.bindAddr, info.bindPort).then(ok, no);
    } else if (name === 'cancel-tcpip-forward') {
      void this.cancel(`${info.bindAddr}:${info.bindPort}`).then(() => ok(), no);
    } else if (name === 'streamlocal-forward@openssh.com' && info.socketPath) {
      void this.listenUnix(info.socketPath).then(() => ok(), no);
    } else if (name === 'cancel-streamlocal-forward@openssh.com' && info.socketPath) {
      void this.cancel(info.socketPath).then(() => ok(), no);
    } else no();
  }

  private async listenTcp(bindAddr: string, bindPort: number): Promise<number> {
    const { connection, sandboxes, login } = this.deps;
    const sandbox = await sandboxes.ensureAwake(login.user.id, login.sandbox.id);
    const listener = await sandboxes.listen(sandbox, {
      address: { host: sandboxHost(bindAddr), port: bindPort },
      onConnection: (stream, peer) => {
        // The client matches forwarded channels by the address and port it asked for.
        connection.forwardOut(bindAddr, port, peer?.host ?? '127.0.0.1', peer?.port ?? 0, (error, channel) => {
          if (error) stream.destroy();
          else relay(stream, channel);
        });
      },
    });
    const port = 'port' in listener.address ? listener.address.port : bindPort;
    this.listeners.set(`${bindAddr}:${bindPort}`, listener);
    this.deps.logger.info({ sandboxId: sandbox.id, bind: `${bindAddr}:${port}` }, 'SSH remote forward listening inside the sandbox');
    return port;
  }

  private async listenUnix(path: string): Promise<void> {
    const { connection, sandboxes, login } = this.deps;
    const sandbox = await sandboxes.ensureAwake(login.user.id, login.sandbox.id);
    const listener = await sandboxes.listen(sandbox, {
      address: { path },
      onConnection: (stream) => {
        connection.openssh_forwardOutStreamLocal(path, (error, channel) => {
          if (error) stream.destroy();
          else relay(stream, channel);
        });
      },
    });
    this.listeners.set(path, listener);
  }

  private async cancel(key: string): Promise<void> {
    const listener = this.listeners.get(key);
    if (!listener) throw new Error(`no forward ${key}`);
    this.listeners.delete(key);
    await listener.close();
  }

  /** The connection ended: its listeners go with it. */
  async close(): Promise<void> {
    const all = [...this.listeners.values()];
    this.listeners.clear();
    await Promise.allSettled(all.map((listener) => listener.close()));
  }
}
