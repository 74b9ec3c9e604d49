export {
  LocalWorkspaces, openLocalWorkspaces, DEFAULT_KEEP_SNAPSHOTS, DEFAULT_POOL_BYTES, type LocalWorkspacesOpts, type StagedWorkspace,
} from './local-workspaces.js';
export { openPool, closePool, poolProblems, POOL_DIR, POOL_IMAGE, MIN_POOL_BYTES, type Pool, type PoolOpts } from './pool.js';
export { qgroupSizes, type QgroupSizes } from './btrfs.js';
