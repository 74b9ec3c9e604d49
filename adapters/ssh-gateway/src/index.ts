export { SshGateway, shellCommand, type SshGatewayDeps } from './gateway.js';
export { loadOrCreateHostKeys, type HostKey } from './host-keys.js';
export { FailureLimiter } from './rate-limit.js';
export { parseSshUsername, type SshTarget } from './usernames.js';
