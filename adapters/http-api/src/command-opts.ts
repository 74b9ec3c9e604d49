// From the contract's exec and run requests to core's options: stdin given whole is decoded,
// a terminal gets its default TERM.
import { bytesPerGb, type ExecRequest, type RunRequest } from '@roost/contract';
import { RoostError, type CreateSandboxOpts, type ExecSandboxOpts, type RunOpts, type StdinOpt } from '@roost/core';

const defaultTerm = 'xterm-256color';

/** `streamed`: stdin comes as frames over the WebSocket, so the request must not hold it too. */
export function execOptsOf(request: ExecRequest, streamed = false): ExecSandboxOpts {
  const { stdin, stdinEncoding, tty, ...rest } = request;
  return {
    ...rest,
    stdin: stdinOf(stdin, stdinEncoding, streamed),
    ...(tty && { tty: { cols: tty.cols, rows: tty.rows, term: tty.term ?? defaultTerm } }),
  };
}

export function runOptsOf(request: RunRequest, streamed = false): RunOpts {
  const { stdin, stdinEncoding, ...rest } = request;
  return { ...sandboxOptsOf(rest), script: rest.script, stdin: stdinOf(stdin, stdinEncoding, streamed) };
}

/** The API's workspace fields (Mags names: workspace_id, base_workspace_id, disk_gb) as core's options. */
export function sandboxOptsOf<T extends { workspaceId?: string; baseWorkspaceId?: string; diskGb?: number }>(
  request: T,
): Omit<T, 'workspaceId' | 'baseWorkspaceId' | 'diskGb'> & Pick<CreateSandboxOpts, 'workspace' | 'baseWorkspace' | 'diskBytes'> {
  const { workspaceId, baseWorkspaceId, diskGb, ...rest } = request;
  return {
    ...rest,
    ...(workspaceId !== undefined && { workspace: workspaceId }),
    ...(baseWorkspaceId !== undefined && { baseWorkspace: baseWorkspaceId }),
    ...(diskGb !== undefined && { diskBytes: gbToBytes(diskGb) }),
  };
}

export function gbToBytes(gb: number): number {
  return Math.round(gb * bytesPerGb);
}

function stdinOf(stdin: string | undefined, encoding: 'utf8' | 'base64' | undefined, streamed: boolean): StdinOpt | undefined {
  if (streamed) {
    if (stdin !== undefined) throw new RoostError('VALIDATION_FAILED', 'on the WebSocket, stdin comes as stdin frames, not in the request');
    return 'stream';
  }
  if (stdin === undefined) return undefined;
  if (encoding !== 'base64') return Buffer.from(stdin, 'utf8');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(stdin) || stdin.length % 4 !== 0) {
    throw new RoostError('VALIDATION_FAILED', 'stdin with stdinEncoding base64 is not valid base64');
  }
  return Buffer.from(stdin, 'base64');
}
