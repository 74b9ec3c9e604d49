export { buildHttpApi, toApiSandbox, type HttpApi, type HttpApiDeps, type RegisteredRoute } from './server.js';
export type { HttpLimits } from './limits.js';
