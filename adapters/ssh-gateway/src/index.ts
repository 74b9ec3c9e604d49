export { SshGateway, type SshGatewayDeps } from './gateway.js';
export { shellCommand } from './session.js';
export { xauthorityEntry } from './xauth.js';
export { loadOrCreateHostKeys, type HostKey } from './host-keys.js';
export { FailureLimiter } from './rate-limit.js';
export { parseSshUsername, type SshTarget } from './usernames.js';
