export { SyncEngine, DEFAULT_CHUNK_BYTES, type SyncEngineOpts, type PushResult, type GcResult } from './engine.js';
export { ObjectStore, s3ConfigFromEnv, describeStore, type S3StoreConfig } from './store.js';
export { FsMeta, defaultFsmetaPath } from './fsmeta.js';
export { S3Workspaces, openS3Workspaces, type S3WorkspacesOpts, type LocalWorkspacesForStore, type StagedWorkspace } from './s3-workspaces.js';
