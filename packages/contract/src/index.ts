export * from './errors.js';
export * from './schemas.js';
export * from './routes.js';
export * from './stream.js';
export { buildOpenApiDocument } from './openapi.js';
