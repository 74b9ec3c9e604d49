// SSH over the HTTP port: a WebSocket to roostd that carries one SSH connection to the gateway,
// for `ProxyCommand roost proxy %n` where only the web port can be reached. Node only.
import type { Duplex } from 'node:stream';

export interface SshTunnelOpts {
  apiUrl: string;
  token: string;
  /** Sandbox name or id: roostd checks it is yours and awake before the tunnel opens. */
  sandbox: string;
}

/**
 * Opens the tunnel; resolves with a byte stream to the SSH gateway once the WebSocket is up.
 * Fails with the daemon's error (e.g. SANDBOX_NOT_FOUND) in the message.
 *
 * @example
 * const tunnel = await openSshTunnel({ apiUrl, token, sandbox: 'dev' });
 * process.stdin.pipe(tunnel).pipe(process.stdout);
 */
export async function openSshTunnel(opts: SshTunnelOpts): Promise<Duplex> {
  // Loaded here, not at the top: most programs that use '@roost/sdk/node' never tunnel.
  const { WebSocket, createWebSocketStream } = await import('ws');
  const url = new URL(`/api/v1/sandboxes/${encodeURIComponent(opts.sandbox)}/ssh`, opts.apiUrl.replace(/^http/, 'ws'));
  const socket = new WebSocket(url, { headers: { authorization: `Bearer ${opts.token}` }, perMessageDeflate: false });
  return new Promise((resolve, reject) => {
    socket.once('open', () => resolve(createWebSocketStream(socket)));
    socket.once('unexpected-response', (_request, response) => {
      let body = '';
      response.on('data', (chunk: Buffer) => (body += chunk.toString()));
      response.on('end', () => {
        let message = `roostd answered ${response.statusCode} to the SSH tunnel`;
        try {
          const error = (JSON.parse(body) as { error: { code: string; message: string; hint: string } }).error;
          message = `${error.message} (${error.code})\n  hint: ${error.hint}`;
        } catch {
          // not one of roostd's error bodies
        }
        reject(new Error(message));
      });
    });
    socket.once('error', reject);
  });
}
