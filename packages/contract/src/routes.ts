// The route table: one entry per API operation. The server registers its handlers against it,
// and the OpenAPI document is generated from it, so the two cannot drift apart.
import { z } from 'zod';
import * as s from './schemas.js';

export interface RouteSpec {
  method: 'GET' | 'POST' | 'PATCH' | 'DELETE';
  /** OpenAPI-style path, e.g. /api/v1/sandboxes/{ref} */
  path: string;
  summary: string;
  /**
   * True for the few routes that answer without a token. Every other route, and every path the
   * table does not name (upgrades included), needs one: the server denies by default.
   */
  public?: true;
  params?: z.ZodObject;
  query?: z.ZodObject;
  body?: z.ZodType;
  /**
   * A WebSocket route (GET + Upgrade). `firstMessage`: the JSON the client sends first; then
   * frames of stream.ts both ways (one per binary message).
   */
  webSocket?: { firstMessage?: z.ZodType };
  /**
   * Status and schema of the success response, in application/json; `stream` means the route
   * answers application/vnd.roost.stream unless the client's Accept prefers application/json.
   */
  success: { status: number; schema?: z.ZodType; stream?: boolean };
}

export const routes = {
  health: {
    method: 'GET',
    path: '/healthz',
    summary: 'Answers 200 once the daemon is ready',
    public: true,
    success: { status: 200, schema: s.healthSchema },
  },
  openApi: {
    method: 'GET',
    path: '/api/openapi.json',
    summary: 'This document',
    public: true,
    success: { status: 200 },
  },
  whoami: {
    method: 'GET',
    path: '/api/v1/whoami',
    summary: 'The user the token belongs to',
    success: { status: 200, schema: s.whoamiResponseSchema },
  },
  doctor: {
    method: 'GET',
    path: '/api/v1/doctor',
    summary: 'Host prerequisites and residue (admins only)',
    success: { status: 200, schema: s.doctorResponseSchema },
  },
  myQuota: {
    method: 'GET',
    path: '/api/v1/quota',
    summary: 'Your quota: your limits and what you use now',
    success: { status: 200, schema: s.quotaSchema },
  },
  getUserQuota: {
    method: 'GET',
    path: '/api/v1/users/{user}/quota',
    summary: "A user's quota, limits and use (admins only)",
    params: s.userRefParamsSchema,
    success: { status: 200, schema: s.quotaSchema },
  },
  updateUserQuota: {
    method: 'PATCH',
    path: '/api/v1/users/{user}/quota',
    summary: "Set some of a user's limits (admins only, their own included); null returns one to the daemon's default",
    params: s.userRefParamsSchema,
    body: s.updateQuotaRequestSchema,
    success: { status: 200, schema: s.quotaSchema },
  },
  createSandbox: {
    method: 'POST',
    path: '/api/v1/sandboxes',
    summary: 'Create a sandbox; answers once a command can run in it',
    body: s.createSandboxRequestSchema,
    success: { status: 201, schema: s.sandboxSchema },
  },
  listSandboxes: {
    method: 'GET',
    path: '/api/v1/sandboxes',
    summary: 'Your sandboxes, newest first',
    query: s.listSandboxesQuerySchema,
    success: { status: 200, schema: s.listSandboxesResponseSchema },
  },
  getSandbox: {
    method: 'GET',
    path: '/api/v1/sandboxes/{ref}',
    summary: 'One sandbox, by id or name',
    params: s.sandboxRefParamsSchema,
    success: { status: 200, schema: s.sandboxSchema },
  },
  removeSandbox: {
    method: 'DELETE',
    path: '/api/v1/sandboxes/{ref}',
    summary: 'Remove a sandbox and everything it made except its workspace (DELETE /api/v1/workspaces/{ref} removes that)',
    params: s.sandboxRefParamsSchema,
    success: { status: 204 },
  },
  updateSandbox: {
    method: 'PATCH',
    path: '/api/v1/sandboxes/{ref}',
    summary: 'Change a sandbox\'s settings',
    params: s.sandboxRefParamsSchema,
    body: s.updateSandboxRequestSchema,
    success: { status: 200, schema: s.sandboxSchema },
  },
  stopSandbox: {
    method: 'POST',
    path: '/api/v1/sandboxes/{ref}/stop',
    summary:
      'Stop a sandbox: its processes end, its record and workspace stay; answers once the workspace\'s final sync is done (or, in statusReason and workspace.failure, why it is not yet safe in the store)',
    params: s.sandboxRefParamsSchema,
    success: { status: 200, schema: s.sandboxSchema },
  },
  startSandbox: {
    method: 'POST',
    path: '/api/v1/sandboxes/{ref}/start',
    summary: 'Start a stopped sandbox again (same id, name and settings, its workspace mounted again: the files it wrote are there); answers once it runs',
    params: s.sandboxRefParamsSchema,
    success: { status: 200, schema: s.sandboxSchema },
  },
  restartSandbox: {
    method: 'POST',
    path: '/api/v1/sandboxes/{ref}/restart',
    summary: 'Stop a sandbox and start it again; answers once it runs',
    params: s.sandboxRefParamsSchema,
    success: { status: 200, schema: s.sandboxSchema },
  },
  pruneSandboxes: {
    method: 'POST',
    path: '/api/v1/sandboxes/prune',
    summary: 'Remove your ended runs (and, with stopped, your stopped sandboxes) with their logs; never a live sandbox',
    body: s.pruneRequestSchema,
    success: { status: 200, schema: s.pruneResponseSchema },
  },
  exec: {
    method: 'POST',
    path: '/api/v1/sandboxes/{ref}/exec',
    summary:
      'Run a command in a sandbox; streams stdout, stderr and the exit status, or with Accept: application/json answers them in one document once it ended. Closing the connection kills the command.',
    params: s.sandboxRefParamsSchema,
    body: s.execRequestSchema,
    success: { status: 200, stream: true, schema: s.execResultSchema },
  },
  logs: {
    method: 'GET',
    path: '/api/v1/sandboxes/{ref}/logs',
    summary:
      'Output of the sandbox\'s script (stdout and stderr frames, or one JSON document with Accept: application/json); NO_RUN_LOGS for a sandbox that never ran one',
    params: s.sandboxRefParamsSchema,
    query: s.logsQuerySchema,
    success: { status: 200, stream: true, schema: s.execResultSchema },
  },
  run: {
    method: 'POST',
    path: '/api/v1/runs',
    summary:
      'Create a sandbox, run a script in it and stream its output (with Accept: application/json: one document once it ended, with the sandbox as it is then). Without persistent the sandbox is removed when the script ends or the client disconnects.',
    body: s.runRequestSchema,
    success: { status: 200, stream: true, schema: s.runResultSchema },
  },
  execWebSocket: {
    method: 'GET',
    path: '/api/v1/sandboxes/{ref}/exec',
    summary:
      'WebSocket upgrade for exec with streamed stdin and terminals: the first client message is the ExecRequest (JSON, tty allowed); then the client sends stdin (16), stdin-end (17) and resize (18) frames and the server the frames the POST streams, one frame per binary message. Closing the socket kills the command.',
    params: s.sandboxRefParamsSchema,
    webSocket: { firstMessage: s.execRequestSchema },
    success: { status: 101 },
  },
  runWebSocket: {
    method: 'GET',
    path: '/api/v1/runs',
    summary:
      'WebSocket upgrade for a run with streamed stdin: the first client message is the RunRequest (JSON); then frames as for exec. Closing the socket kills the script and, without persistent, removes the sandbox.',
    webSocket: { firstMessage: s.runRequestSchema },
    success: { status: 101 },
  },
  sshTunnel: {
    method: 'GET',
    path: '/api/v1/sandboxes/{ref}/ssh',
    summary:
      'WebSocket upgrade carrying one SSH connection to the gateway (binary messages), for `roost proxy` as a ProxyCommand where only the HTTP port is reachable. The sandbox must be yours; SSH authentication follows as usual.',
    params: s.sandboxRefParamsSchema,
    webSocket: {},
    success: { status: 101 },
  },
  resizeSandbox: {
    method: 'POST',
    path: '/api/v1/sandboxes/{ref}/resize',
    summary: 'Change the enforced size of the sandbox\'s workspace (refused below what it uses: DISK_TOO_SMALL)',
    params: s.sandboxRefParamsSchema,
    body: s.resizeSandboxRequestSchema,
    success: { status: 200, schema: s.sandboxSchema },
  },
  syncSandbox: {
    method: 'POST',
    path: '/api/v1/sandboxes/{ref}/sync',
    summary: 'Push the sandbox\'s workspace now, without stopping it (a running sandbox is frozen for the moment of the capture); answers once the store has it',
    params: s.sandboxRefParamsSchema,
    success: { status: 200, schema: s.syncSandboxResponseSchema },
  },
  listWorkspaces: {
    method: 'GET',
    path: '/api/v1/workspaces',
    summary: 'Your workspaces, newest first, with disk use and sync state',
    success: { status: 200, schema: s.listWorkspacesResponseSchema },
  },
  getWorkspace: {
    method: 'GET',
    path: '/api/v1/workspaces/{ref}',
    summary: 'One workspace, by id or name',
    params: s.workspaceRefParamsSchema,
    success: { status: 200, schema: s.workspaceSchema },
  },
  deleteWorkspace: {
    method: 'DELETE',
    path: '/api/v1/workspaces/{ref}',
    summary: 'Remove a workspace here and in the store; refused (WORKSPACE_IN_USE) while a sandbox, running or stopped, uses it',
    params: s.workspaceRefParamsSchema,
    success: { status: 204 },
  },
  forkWorkspace: {
    method: 'POST',
    path: '/api/v1/workspaces/{ref}/fork',
    summary: 'A new workspace holding this one\'s state now, copy-on-write (a running sandbox is frozen for the moment of the capture)',
    params: s.workspaceRefParamsSchema,
    body: s.forkWorkspaceRequestSchema,
    success: { status: 201, schema: s.workspaceSchema },
  },
  listWorkspaceSnapshots: {
    method: 'GET',
    path: '/api/v1/workspaces/{ref}/snapshots',
    summary: 'The snapshots the workspace store keeps of it, oldest first',
    params: s.workspaceRefParamsSchema,
    success: { status: 200, schema: s.listSnapshotsResponseSchema },
  },
  restoreWorkspace: {
    method: 'POST',
    path: '/api/v1/workspaces/{ref}/restore',
    summary: 'Put the workspace back to one of its snapshots; refused (WORKSPACE_IN_USE) while a live sandbox mounts it',
    params: s.workspaceRefParamsSchema,
    body: s.restoreWorkspaceRequestSchema,
    success: { status: 200, schema: s.workspaceSchema },
  },
  sshInfo: {
    method: 'GET',
    path: '/api/v1/ssh',
    summary: 'Where the SSH gateway listens and its host keys (for known_hosts)',
    success: { status: 200, schema: s.sshInfoSchema },
  },
  listSshKeys: {
    method: 'GET',
    path: '/api/v1/ssh-keys',
    summary: 'Your SSH public keys (any of them opens an SSH session to your sandboxes)',
    success: { status: 200, schema: s.listSshKeysResponseSchema },
  },
  addSshKey: {
    method: 'POST',
    path: '/api/v1/ssh-keys',
    summary:
      'Register an SSH public key for the SSH gateway. A key you registered before is no error: its record comes back with alreadyRegistered true. A key registered to another user is SSH_KEY_TAKEN.',
    body: s.addSshKeyRequestSchema,
    success: { status: 201, schema: s.addSshKeyResponseSchema },
  },
  removeSshKey: {
    method: 'DELETE',
    path: '/api/v1/ssh-keys/{ref}',
    summary: 'Remove one of your SSH keys',
    params: s.sshKeyRefParamsSchema,
    success: { status: 204 },
  },
} as const satisfies Record<string, RouteSpec>;

export type RouteName = keyof typeof routes;
