export { Roost, Quotas, Sandboxes, SandboxHandle, SshKeys, type RoostOpts, type CallOpts, type CreateSandboxOpts, type RunOpts, type ExecOpts } from './client.js';
export { CommandHandle, type OutputChunk, type CommandExit } from './command.js';
export { RoostApiError, DaemonUnreachableError } from './errors.js';
export type { Sandbox, Health, Whoami, ErrorCode, DoctorReport, SshInfo, SshKey, AddedSshKey, Quota, QuotaLimits, UpdateQuotaRequest } from '@roost/contract';
