// One SSH session channel: its requests (pty, env, agent, X11, window changes, signals) and the
// one process it runs (shell, exec or the sftp subsystem) inside the sandbox.
import { randomBytes } from 'node:crypto';
import type { Connection, ServerChannel, Session } from 'ssh2';
import type { Logger, ProcessHandle, SandboxListener, SandboxRecord, SandboxService, TerminalOpts, UserRecord } from '@roost/core';
import { openAgentChannel, relayToClient, type ChannelBudget } from './channels.js';
import type { SshGatewayLimits } from './gateway.js';
import { xauthorityEntry } from './xauth.js';

export interface Login {
  user: UserRecord;
  sandbox: SandboxRecord;
  /** The user inside the sandbox: box+name's, else the sandbox's default user. */
  unixUser: string;
}

/** Variables a client may set with SendEnv (as OpenSSH's AcceptEnv LANG LC_* plus TERM). */
const acceptedEnv = /^(LANG|LANGUAGE|LC_[A-Z]+|TERM|COLORTERM|TZ)$/;
/** X11 displays offered inside a sandbox: localhost:10 and up, like sshd's X11DisplayOffset. */
const firstDisplay = 10;
const lastDisplay = 99;

/**
 * The login shell of any image: bash when it has one, else sh. `-c` when there is a command.
 * Run through /bin/sh, which every image has.
 */
export function shellCommand(command?: string): string[] {
  const pick = 'for s in /bin/bash /usr/bin/bash /bin/sh; do [ -x "$s" ] && break; done;';
  return command === undefined
    ? ['/bin/sh', '-c', `${pick} exec "$s" -l`]
    : ['/bin/sh', '-c', `${pick} exec "$s" -c "$0"`, command];
}

/** What a logged-in connection's sessions and forwards work with. */
export interface ConnectionDeps {
  connection: Connection;
  login: Login;
  sandboxes: SandboxService;
  logger: Logger;
  /** The connection's channels, all kinds together. */
  channels: ChannelBudget;
  limits: SshGatewayLimits;
}

export class SshSession {
  private readonly env: Record<string, string> = {};
  private terminal?: TerminalOpts;
  private process?: ProcessHandle;
  /** Agent and X11 set-up run while the client sends its next requests; the process waits. */
  private readonly preparing: Promise<unknown>[] = [];
  private readonly listeners: SandboxListener[] = [];
  /** Per-session dirs under /tmp inside the sandbox (agent socket, Xauthority), removed at the end. */
  private readonly dirs: string[] = [];
  private closed = false;
  /** A session runs one process (shell, exec or subsystem); later requests for one are refused. */
  private started = false;
  private agentRequested = false;
  private x11Requested = false;

  constructor(
    session: Session,
    private readonly deps: ConnectionDeps,
  ) {
    // ssh2 answers a request of a closed channel by throwing: answer through this.
    const answer = (fn: (() => void) | undefined) => {
      try {
        fn?.();
      } catch (error) {
        deps.logger.debug({ sandboxId: deps.login.sandbox.id, err: (error as Error).message }, 'SSH request of a closed channel');
      }
    };
    session.on('pty', (accept, reject, info) => {
      if (this.started) return answer(reject);
      this.terminal = { term: info.term || 'xterm', cols: info.cols, rows: info.rows };
      answer(accept);
    });
    session.on('window-change', (accept, _reject, info) => {
      if (this.terminal) this.terminal = { ...this.terminal, cols: info.cols, rows: info.rows };
      this.process?.resize?.(info.cols, info.rows);
      answer(accept);
    });
    session.on('env', (accept, reject, info) => {
      const room = info.key in this.env || Object.keys(this.env).length < deps.limits.maxEnvPerSession;
      if (acceptedEnv.test(info.key) && room && !this.started) {
        this.env[info.key] = info.val;
        answer(accept);
      } else answer(reject);
    });
    session.on('signal', (accept, _reject, info) => {
      if (/^[A-Z0-9]{1,16}$/.test(info.name)) this.process?.kill(`SIG${info.name}` as NodeJS.Signals);
      answer(accept);
    });
    session.on('auth-agent', (accept, reject) => {
      if (!deps.login.sandbox.sshAgentForwarding) {
        deps.logger.info({ sandboxId: deps.login.sandbox.id }, 'SSH agent forwarding refused: not enabled for this sandbox (roost set --ssh-agent)');
        return answer(reject);
      }
      if (this.agentRequested || this.started) return answer(reject);
      this.agentRequested = true;
      answer(accept);
      this.prepare(this.forwardAgent());
    });
    session.on('x11', (accept, reject, info) => {
      if (this.x11Requested || this.started) return answer(reject);
      this.x11Requested = true;
      answer(accept);
      // ssh2 hands the cookie over as the hex text the client sent, in a Buffer.
      const cookie = typeof info.cookie === 'string' ? info.cookie : Buffer.from(info.cookie as Uint8Array).toString('latin1');
      this.prepare(this.forwardX11(info.protocol, cookie, info.screen));
    });
    const start = (accept: () => ServerChannel, reject: (() => void) | undefined, command: string[], opts: { terminal?: boolean } = {}) => {
      if (this.started) return answer(reject);
      this.started = true;
      let channel: ServerChannel;
      try {
        channel = accept();
      } catch (error) {
        deps.logger.debug({ sandboxId: deps.login.sandbox.id, err: (error as Error).message }, 'SSH session closed before its process started');
        return;
      }
      this.run(channel, command, opts).catch((error: Error) =>
        deps.logger.warn({ sandboxId: deps.login.sandbox.id, err: error.message }, 'SSH session process failed'),
      );
    };
    session.on('exec', (accept, reject, info) => start(accept, reject, shellCommand(info.command)));
    session.on('shell', (accept, reject) => start(accept, reject, shellCommand()));
    session.on('subsystem', (accept, reject, info) => {
      if (info.name !== 'sftp') return answer(reject);
      // The channel's bytes are the SFTP protocol: the sandbox's sftp-server speaks it.
      start(accept, reject, this.deps.sandboxes.sftpServerCommand(), { terminal: false });
    });
    session.on('close', () => {
      this.close().catch((error: Error) => deps.logger.debug({ sandboxId: deps.login.sandbox.id, err: error.message }, 'SSH session clean-up failed'));
    });
  }

  /**
   * Keeps a set-up for the process to wait on. Handled at once: a set-up that fails before a
   * process is asked for (or when none ever is) must not be an unhandled rejection, which
   * would end roostd; run() still sees the failure through Promise.all.
   */
  private prepare(setUp: Promise<void>): void {
    setUp.catch((error: Error) => this.deps.logger.debug({ sandboxId: this.deps.login.sandbox.id, err: error.message }, 'SSH session set-up failed'));
    this.preparing.push(setUp);
  }

  /** Runs `command` in the sandbox with the channel as its stdio; the exit status goes back. */
  private async run(channel: ServerChannel, command: string[], opts: { terminal?: boolean } = {}): Promise<void> {
    const { sandboxes, login, logger } = this.deps;
    const tty = opts.terminal === false ? undefined : this.terminal;
    // A channel that fails (a reset mid-session) is torn down with its process, never thrown.
    channel.on('error', (error: Error) => logger.debug({ sandboxId: login.sandbox.id, err: error.message }, 'SSH channel error'));
    channel.stderr.on('error', () => {});
    let process: ProcessHandle;
    try {
      await Promise.all(this.preparing);
      const sandbox = await sandboxes.ensureAwake(login.user.id, login.sandbox.id);
      process = await sandboxes.attach(sandbox, { command, env: this.env, stdin: true, tty, user: login.unixUser });
    } catch (error) {
      channel.stderr.write(`roost: ${(error as Error).message}\r\n`);
      channel.exit(1);
      channel.end();
      return;
    }
    this.process = process;
    if (this.closed) process.kill('SIGHUP');
    process.stdin?.on('error', () => {});
    process.stdout.on('error', () => {});
    process.stderr.on('error', () => {});
    process.stdout.pipe(channel, { end: false });
    process.stderr.pipe(channel.stderr, { end: false });
    if (process.stdin) channel.pipe(process.stdin);
    const outputDone = Promise.all([ended(process.stdout), ended(process.stderr)]);
    let finished = false;
    channel.on('close', () => {
      // The client went away while the process runs: hang up on it, as a terminal would.
      if (!finished) process.kill('SIGHUP');
    });
    const status = await process.wait();
    finished = true;
    await outputDone;
    if (status.signal) channel.exit(status.signal.replace(/^SIG/, ''), false, '');
    else channel.exit(status.exitCode);
    channel.end();
    logger.debug({ sandboxId: login.sandbox.id, exitCode: status.exitCode }, 'SSH process ended');
  }

  /**
   * A unix socket inside the sandbox (SSH_AUTH_SOCK) whose connections become
   * auth-agent@openssh.com channels to the client's agent.
   */
  private async forwardAgent(): Promise<void> {
    const { connection, sandboxes, login } = this.deps;
    const dir = await this.privateDir('agent');
    const listener = await sandboxes.listen(login.sandbox, {
      address: { path: `${dir}/agent.sock` },
      user: login.unixUser,
      onConnection: (stream) => {
        relayToClient(this.deps.channels, stream, (callback) => {
          openAgentChannel(connection).then(
            (channel) => callback(undefined, channel),
            (error: Error) => callback(error, undefined as never),
          );
        });
      },
    });
    await this.keep(listener);
    this.env.SSH_AUTH_SOCK = `${dir}/agent.sock`;
  }

  /** A display inside the sandbox (localhost:N) whose connections become x11 channels. */
  private async forwardX11(protocol: string, cookie: string, screen: number): Promise<void> {
    const { connection, sandboxes, login, logger } = this.deps;
    let listener: SandboxListener | undefined;
    let display = firstDisplay;
    for (; display <= lastDisplay; display++) {
      listener = await sandboxes
        .listen(login.sandbox, {
          address: { host: '127.0.0.1', port: 6000 + display },
          user: login.unixUser,
          onConnection: (stream, peer) => {
            relayToClient(this.deps.channels, stream, (callback) => connection.x11(peer?.host ?? '127.0.0.1', peer?.port ?? 0, callback));
          },
        })
        .catch((error: { code?: string }) => {
          // Taken (another session's display, or the sandbox's own X server): try the next.
          if (error.code !== 'LISTEN_FAILED') throw error;
          return undefined;
        });
      if (listener) break;
    }
    if (!listener) {
      logger.warn({ sandboxId: login.sandbox.id }, 'X11 forwarding: no free display between :10 and :99');
      return;
    }
    await this.keep(listener);
    const dir = await this.privateDir('x11');
    await this.exec(['/bin/sh', '-c', 'umask 077; cat > "$0"', `${dir}/Xauthority`], xauthorityEntry(display, protocol, cookie));
    this.env.DISPLAY = `localhost:${display}.${screen}`;
    this.env.XAUTHORITY = `${dir}/Xauthority`;
  }

  /**
   * Keeps a listener for close() to end; one that comes after the session closed (a client
   * that asks for agent forwarding and leaves at once) is closed here, or each such session
   * would leave a relay running in the sandbox.
   */
  private async keep(listener: SandboxListener): Promise<void> {
    if (this.closed) {
      await listener.close();
      throw new Error('the session closed while its forwarding was set up');
    }
    this.listeners.push(listener);
  }

  /** A fresh 0700 directory under /tmp inside the sandbox, for this session's sockets. */
  private async privateDir(kind: string): Promise<string> {
    const dir = `/tmp/roost-${kind}-${randomBytes(6).toString('hex')}`;
    await this.exec(['mkdir', '-m', '700', dir]);
    if (this.closed) {
      await this.exec(['rm', '-rf', dir]);
      throw new Error('the session closed while its forwarding was set up');
    }
    this.dirs.push(dir);
    return dir;
  }

  /**
   * A helper command in the sandbox as the session's user (so the dirs and files it makes are
   * that user's, and it can touch nothing more than the user could); throws with its stderr
   * (at most 4 KiB of it) if it fails.
   */
  private async exec(command: string[], input?: Uint8Array): Promise<void> {
    const process = await this.deps.sandboxes.attach(this.deps.login.sandbox, { command, stdin: input !== undefined, user: this.deps.login.unixUser });
    const stderr: Buffer[] = [];
    let stderrBytes = 0;
    process.stdout.resume();
    process.stdout.on('error', () => {});
    process.stderr.on('error', () => {});
    process.stdin?.on('error', () => {});
    process.stderr.on('data', (chunk: Buffer) => {
      if (stderrBytes >= 4096) return;
      stderr.push(chunk);
      stderrBytes += chunk.length;
    });
    process.stdin?.end(input);
    const status = await process.wait();
    if (status.exitCode !== 0) throw new Error(`${command[0]} failed in the sandbox: ${Buffer.concat(stderr).toString().trim()}`);
  }

  private async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled(this.listeners.map((listener) => listener.close()));
    if (this.dirs.length > 0) await this.exec(['rm', '-rf', ...this.dirs]).catch(() => {});
  }
}

function ended(stream: NodeJS.ReadableStream): Promise<void> {
  return new Promise((resolve) => {
    stream.once('end', resolve);
    stream.once('close', resolve);
    stream.once('error', () => resolve());
  });
}
