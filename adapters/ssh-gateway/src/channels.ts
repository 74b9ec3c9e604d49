// Plumbing between SSH channels and streams from the sandbox.
import type { Duplex } from 'node:stream';
import type { Connection, ServerChannel } from 'ssh2';

/**
 * Copies both ways with backpressure and half-close (EOF one way leaves the other open), and
 * tears both down when either fails or closes.
 */
export function relay(stream: Duplex, channel: Duplex | ServerChannel): void {
  const other = channel as Duplex;
  stream.pipe(other);
  other.pipe(stream);
  const destroy = () => {
    stream.destroy();
    other.destroy();
  };
  stream.once('error', destroy);
  other.once('error', destroy);
  stream.once('close', () => other.end());
  other.once('close', () => stream.end());
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
    internals._protocol.openssh_authAgent(local, channelWindow, channelPacketSize);
  });
}
