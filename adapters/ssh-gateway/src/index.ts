export { SshGateway, type SshGatewayDeps } from './gateway.js';
export { shellCommand } from './session.js';
export { xauthorityEntry } from './xauth.js';
export { loadOrCreateHostKeys, type HostKey } from './host-keys.js';
export { FailureLimiter } from './rate-limit.js';
export { parseSshUsername, parseTunnelUsername, type SshTarget } from './usernames.js';
