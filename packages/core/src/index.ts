export * from './ports.js';
export * from './errors.js';
export * from './names.js';
export * from './output.js';
export * from './run-logs.js';
export * from './sandbox-service.js';
export * from './auth-service.js';
export * from './warm-pool.js';
