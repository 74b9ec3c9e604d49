// Plumbing between SSH channels and streams from the sandbox.
import type { Duplex } from 'node:stream';
import type { Connection, ServerChannel } from 'ssh2';

/**
 * Copies both ways with backpressure and half-close (EOF one way leaves the other open), and
 * tears both down when either fails or closes. Returns the teardown.
 *
 * A side that closes ends the other (what was written still gets through) and then destroys
 * it: a peer that never reads, or a process inside that never stops sending, would otherwise
 * keep the relay process in the sandbox alive after its SSH channel is gone.
 */
export function relay(stream: Duplex, channel: Duplex | ServerChannel): () => void {
  const other = channel as Duplex;
  stream.pipe(other);
  other.pipe(stream);
  const destroy = () => {
    stream.destroy();
    other.destroy();
  };
  // on, not once: a destroyed stream may still report a second error (a reset after EPIPE).
  stream.on('error', destroy);
  other.on('error', destroy);
  const endThenDestroy = (side: Duplex) => {
    if (side.destroyed) return;
    if (side.writableFinished) side.destroy();
    else side.end(() => side.destroy());
  };
  stream.once('close', () => endThenDestroy(other));
  other.once('close', () => endThenDestroy(stream));
  return destroy;
}

// ssh2's server can open forwarded-tcpip, x11 and streamlocal channels to the client, but not
// auth-agent@openssh.com; its protocol layer can, and its channel manager is generic.
interface ConnectionInternals {
  _chanMgr: { add(wrapper: unknown): number };
  _protocol: { openssh_authAgent(channel: number, window: number, packetSize: number): void };
}
const channelWindow = 2 * 1024 * 1024;
const channelPacketSize = 32 * 1024;

/** Opens a channel to the client's SSH agent (the client allowed it with ssh -A). */
export function openAgentChannel(connection: Connection): Promise<ServerChannel> {
  const internals = connection as unknown as ConnectionInternals;
  return new Promise((resolve, reject) => {
    const wrapper = Object.assign(
      (error: Error | undefined, channel: ServerChannel) => (error ? reject(error) : resolve(channel)),
      { type: 'auth-agent@openssh.com' },
    );
    const local = internals._chanMgr.add(wrapper);
    if (local === -1) {
      reject(new Error('no free SSH channel'));
      return;
    }
    try {
      internals._protocol.openssh_authAgent(local, channelWindow, channelPacketSize);
    } catch (error) {
      // The connection ended meanwhile.
      reject(error as Error);
    }
  });
}

/**
 * How many channels one connection holds open at once, whoever opened them: every channel is
 * a relay or a process in the sandbox, so a client must not open them without bound.
 */
export class ChannelBudget {
  private open = 0;
  /** Teardowns of the relays on channels still open. */
  private readonly teardowns = new Set<() => void>();

  constructor(private readonly max: number) {}

  /** Takes a place for a channel about to open; false when the connection has no more. */
  take(): boolean {
    if (this.open >= this.max) return false;
    this.open++;
    return true;
  }

  /** Gives back the place of a channel that closed (or never opened). */
  give(): void {
    this.open = Math.max(0, this.open - 1);
  }

  /** Gives the place back when `channel` closes; once, however it ends. */
  holdUntilClosed(channel: { once(event: 'close', listener: () => void): unknown }, teardown?: () => void): void {
    if (teardown) this.teardowns.add(teardown);
    channel.once('close', () => {
      this.give();
      if (teardown) this.teardowns.delete(teardown);
    });
  }

  /**
   * The connection ended: tears down every relay still held. ssh2 emits a server channel's
   * 'close' only after its 'end', which a relay paused by backpressure may never read.
   */
  closeAll(): void {
    for (const teardown of this.teardowns) teardown();
    this.teardowns.clear();
  }
}

/**
 * Opens a channel to the client for a connection accepted inside the sandbox (-R, agent, X11),
 * within the connection's budget, and relays it; the stream is dropped when that fails. The
 * stream's errors are handled from the start: it may fail while the channel is opening.
 */
export function relayToClient(
  budget: ChannelBudget,
  stream: Duplex,
  open: (callback: (error: Error | undefined, channel: ServerChannel) => void) => void,
): void {
  stream.on('error', () => stream.destroy());
  if (!budget.take()) {
    stream.destroy();
    return;
  }
  let settled = false;
  const done = (error: Error | undefined, channel?: ServerChannel) => {
    if (settled) return;
    settled = true;
    if (error || !channel) {
      budget.give();
      stream.destroy();
      return;
    }
    budget.holdUntilClosed(channel, relay(stream, channel));
  };
  try {
    open((error, channel) => done(error, channel));
  } catch (error) {
    // ssh2 throws when the connection is already gone.
    done(error as Error);
  }
}
