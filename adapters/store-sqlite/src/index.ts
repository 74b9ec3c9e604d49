export { openSqliteStore, type SqliteStoreOpts } from './store.js';
