export { buildHttpApi, toApiSandbox, type HttpApiDeps } from './server.js';
