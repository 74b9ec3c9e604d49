export { AddressInUseError, buildDaemon, newId, PrerequisiteError, type BuildDaemonOpts, type Daemon } from './daemon.js';
export { loadConfig, configSchema, type ConfigOverrides, type DaemonConfig } from './config.js';
export { version } from './version.js';
