// '@roost/sdk/node': what only Node programs need (the CLI uses both).
export { nodeHttpFetch } from './node-fetch.js';
export { openSshTunnel, type SshTunnelOpts } from './ssh-tunnel.js';
