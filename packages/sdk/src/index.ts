export { Roost, Quotas, Sandboxes, Workspaces, SandboxHandle, SshKeys, type RoostOpts, type CallOpts, type CreateSandboxOpts, type RunOpts, type ExecOpts, type StdinOpts } from './client.js';
export type { StdinSource } from './command-socket.js';
export { CommandHandle, type OutputChunk, type CommandExit } from './command.js';
export { RoostApiError, DaemonUnreachableError, NotRoostdError } from './errors.js';
export type { Sandbox, Health, Whoami, ErrorCode, DoctorReport, SshInfo, SshKey, AddedSshKey, Quota, QuotaLimits, UpdateQuotaRequest, Workspace, WorkspaceSnapshot, SyncResult } from '@roost/contract';
