import type {
  AddedSshKey,
  CreateSandboxRequest,
  DoctorReport,
  ExecRequest,
  Health,
  Quota,
  RunRequest,
  Sandbox,
  SshInfo,
  SshKey,
  UpdateQuotaRequest,
  UpdateSandboxRequest,
  PruneRequest,
  PruneResult,
  Whoami,
  Workspace,
  WorkspaceSnapshot,
  SyncResult,
} from '@roost/contract';
import { streamMediaType } from '@roost/contract/stream';
import { CommandHandle } from './command.js';
import { checkMediaType, errorOfAnswer, errorOfFailedRequest } from './answers.js';
import { NotRoostdError } from './errors.js';
import { openCommandSocket, pumpStdin, type StdinSource } from './command-socket.js';

export interface RoostOpts {
  /** Where roostd answers, e.g. http://127.0.0.1:7070 */
  apiUrl: string;
  /** Bearer token (the admin token from the daemon host's data dir, which `roost login` finds there). */
  token?: string;
  /** The fetch to use (default: the global one); in Node CLIs, `nodeHttpFetch` from '@roost/sdk/node' starts faster. */
  fetch?: typeof fetch;
}

/** Options every call takes. */
export interface CallOpts {
  signal?: AbortSignal;
}

/**
 * What the command reads as stdin. A string or bytes go whole in the request (bounded by the
 * daemon's body limit); an async iterable (a Node Readable, a web ReadableStream) streams over a
 * WebSocket, with backpressure, then EOF; `true` opens stdin for `handle.writeStdin()` and
 * `closeStdin()`. Absent: the command reads EOF at once.
 *
 * @example
 * roost.exec('dev', ['sha256sum'], { stdin: createReadStream('data.bin') }); // streamed
 * roost.run({ script: 'wc -l', stdin: 'a\nb\n' }); // whole, in the request
 */
export interface StdinOpts {
  stdin?: StdinSource | true;
}

export type CreateSandboxOpts = CreateSandboxRequest & CallOpts;
export type RunOpts = Omit<RunRequest, 'stdin' | 'stdinEncoding'> & StdinOpts & CallOpts;
/** `tty`: run under a terminal of this size (output then all comes as stdout); `resize()` changes it. */
export type ExecOpts = Omit<ExecRequest, 'command' | 'stdin' | 'stdinEncoding'> & StdinOpts & CallOpts;

/**
 * The Roost client. The CLI and the dashboard use only this.
 *
 * @example
 * const roost = new Roost({ apiUrl: 'http://127.0.0.1:7070', token });
 * const run = roost.run({ script: 'echo hello' });
 * for await (const chunk of run.output()) process.stdout.write(chunk.data);
 * console.log((await run.wait()).exitCode);
 */
export class Roost {
  readonly apiUrl: string;
  /** Sandboxes: create, look up, stop, remove. */
  readonly sandboxes: Sandboxes;
  /** Your SSH public keys, for the SSH gateway. */
  readonly sshKeys: SshKeys;
  /** Per-user limits: yours, and (admins) anyone's. */
  readonly quotas: Quotas;
  /** Workspaces: the files of sandboxes, kept apart from them (list, fork, snapshots, remove). */
  readonly workspaces: Workspaces;

  constructor(private readonly opts: RoostOpts) {
    this.apiUrl = opts.apiUrl.replace(/\/+$/, '');
    this.sandboxes = new Sandboxes(this);
    this.sshKeys = new SshKeys(this);
    this.quotas = new Quotas(this);
    this.workspaces = new Workspaces(this);
  }

  /**
   * Your workspaces, newest first, with disk use and sync state (the Mags method name).
   * @example for (const ws of await roost.listWorkspaces()) console.log(ws.name, ws.usedBytes);
   */
  listWorkspaces(opts: CallOpts = {}): Promise<Workspace[]> {
    return this.workspaces.list(opts);
  }

  /**
   * Removes a workspace here and in the store (the Mags method name); refused with
   * WORKSPACE_IN_USE while a sandbox uses it.
   * @example await roost.deleteWorkspace('proj');
   */
  deleteWorkspace(ref: string, opts: CallOpts = {}): Promise<void> {
    return this.workspaces.remove(ref, opts);
  }

  /**
   * Pushes a sandbox's workspace to the store now, without stopping it; resolves once the store has it.
   * @example const { snapshot } = await roost.sync('dev');
   */
  sync(ref: string, opts: CallOpts = {}): Promise<SyncResult> {
    return this.sandboxes.sync(ref, opts);
  }

  /**
   * Changes the enforced size of a sandbox's workspace, in GB (2^30 bytes; null: none).
   * @example await roost.resize('dev', { diskGb: 20 });
   */
  resize(ref: string, size: { diskGb: number | null }, opts: CallOpts = {}): Promise<Sandbox> {
    return this.sandboxes.resize(ref, size.diskGb, opts);
  }

  /**
   * Whether the daemon is up; needs no token.
   * @example const { version } = await roost.health();
   */
  health(opts: CallOpts = {}): Promise<Health> {
    return this.request('GET', '/healthz', undefined, opts);
  }

  /**
   * The user the token belongs to.
   * @example const { user } = await roost.whoami();
   */
  whoami(opts: CallOpts = {}): Promise<Whoami> {
    return this.request('GET', '/api/v1/whoami', undefined, opts);
  }

  /**
   * Where the SSH gateway listens and its host keys (what `roost ssh` and `ssh-config` use).
   * @example const { port, hostKeys } = await roost.sshInfo();
   */
  sshInfo(opts: CallOpts = {}): Promise<SshInfo> {
    return this.request('GET', '/api/v1/ssh', undefined, opts);
  }

  /**
   * Host prerequisites and residue, as `roost doctor` shows them (admin token needed).
   * @example const { problems, leftovers } = await roost.doctor();
   */
  doctor(opts: CallOpts = {}): Promise<DoctorReport> {
    return this.request('GET', '/api/v1/doctor', undefined, opts);
  }

  /**
   * Runs a script in a fresh sandbox and streams its output. Without `persistent` the sandbox is
   * removed when the script ends, or when you `kill()` the handle.
   * @example
   * const { exitCode } = await roost.run({ script: 'exit 3' }).wait(); // 3
   * @example
   * const sum = roost.run({ script: 'sha256sum', stdin: createReadStream('big.iso') }); // streamed
   */
  run(opts: RunOpts): CommandHandle {
    const { signal, stdin, ...body } = opts;
    return this.command('/api/v1/runs', body, stdin, false, signal);
  }

  /**
   * Runs a command in an existing sandbox.
   * @example
   * const cmd = roost.exec('dev', ['bash', '-c', 'ls /']);
   * @example
   * const upper = roost.exec('dev', ['tr', 'a-z', 'A-Z'], { stdin: 'hello' }); // HELLO
   * @example
   * const shell = roost.exec('dev', ['bash'], { stdin: process.stdin, tty: { cols: 80, rows: 24 } });
   * process.stdout.on('resize', () => void shell.resize(process.stdout.columns, process.stdout.rows));
   */
  exec(ref: string, command: string[], opts: ExecOpts = {}): CommandHandle {
    const { signal, stdin, ...rest } = opts;
    return this.command(`/api/v1/sandboxes/${encodeURIComponent(ref)}/exec`, { ...rest, command }, stdin, Boolean(rest.tty), signal);
  }

  /** A POST with the whole stdin in the body, or the WebSocket when stdin streams or a terminal is asked. */
  private command(path: string, body: Record<string, unknown>, stdin: StdinOpts['stdin'], tty: boolean, signal?: AbortSignal): CommandHandle {
    const streamed = stdin === true || (stdin !== undefined && typeof stdin !== 'string' && !(stdin instanceof Uint8Array));
    if (!streamed && !tty) {
      const whole = stdin === undefined ? {} : typeof stdin === 'string' ? { stdin } : { stdin: toBase64(stdin as Uint8Array), stdinEncoding: 'base64' };
      return this.stream('POST', path, { ...body, ...whole }, signal);
    }
    const abort = new AbortController();
    signal?.addEventListener('abort', () => abort.abort(), { once: true });
    const socket = openCommandSocket(this.apiUrl, path, this.opts.token, body, abort.signal);
    socket.catch(() => {});
    const handle = new CommandHandle(
      socket.then((open) => open.incoming),
      abort,
      socket,
    );
    if (stdin !== undefined && stdin !== true) {
      void socket.then((open) => pumpStdin(open, stdin, open.closed), () => {});
    }
    return handle;
  }

  /**
   * Output of the sandbox's script; with `follow`, until it ends.
   * @example for await (const chunk of roost.logs('sb-1', { follow: true }).output()) …
   */
  logs(ref: string, opts: { follow?: boolean } & CallOpts = {}): CommandHandle {
    const query = opts.follow ? '?follow=true' : '';
    return this.stream('GET', `/api/v1/sandboxes/${encodeURIComponent(ref)}/logs${query}`, undefined, opts.signal);
  }

  /** @internal JSON request; throws RoostApiError or DaemonUnreachableError. */
  async request<T>(method: string, path: string, body: unknown, opts: CallOpts): Promise<T> {
    const response = await this.send(method, path, body, opts.signal, 'application/json');
    if (response.status === 204) return undefined as T;
    return (await response.json().catch((error: Error) => {
      throw error instanceof SyntaxError ? new NotRoostdError(this.apiUrl, `JSON that does not parse (${error.message})`) : error;
    })) as T;
  }

  private stream(method: string, path: string, body: unknown, signal?: AbortSignal): CommandHandle {
    const abort = new AbortController();
    signal?.addEventListener('abort', () => abort.abort(), { once: true });
    const response = this.send(method, path, body, abort.signal, streamMediaType).then((answer) => {
      if (!answer.body) throw new Error('empty response from roostd');
      return answer.body as AsyncIterable<Uint8Array>;
    });
    // The caller sees a failed request through the handle; keep Node from calling it unhandled.
    response.catch(() => {});
    return new CommandHandle(response, abort);
  }

  private async send(method: string, path: string, body: unknown, signal: AbortSignal | undefined, accept: string) {
    const headers: Record<string, string> = { accept };
    if (this.opts.token) headers.authorization = `Bearer ${this.opts.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let response: Response;
    try {
      response = await (this.opts.fetch ?? fetch)(`${this.apiUrl}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
      });
    } catch (error) {
      if (signal?.aborted) throw error;
      throw errorOfFailedRequest(this.apiUrl, error);
    }
    if (!response.ok) throw await errorOfAnswer(this.apiUrl, response);
    await checkMediaType(this.apiUrl, response, accept);
    return response;
  }
}

/** `roost.sshKeys`: the public keys that open SSH sessions to your sandboxes. */
export class SshKeys {
  constructor(private readonly roost: Roost) {}

  /**
   * Registers a public key (one line of an id_*.pub file). Adding a key you already have is no
   * error: `alreadyRegistered` is true and the existing record comes back.
   * @example await roost.sshKeys.add(readFileSync(`${homedir()}/.ssh/id_ed25519.pub`, 'utf8'));
   */
  add(publicKey: string, opts: { name?: string } & CallOpts = {}): Promise<AddedSshKey> {
    return this.roost.request<AddedSshKey>('POST', '/api/v1/ssh-keys', { publicKey, name: opts.name }, opts);
  }

  /** @example const keys = await roost.sshKeys.list(); */
  async list(opts: CallOpts = {}): Promise<SshKey[]> {
    return (await this.roost.request<{ keys: SshKey[] }>('GET', '/api/v1/ssh-keys', undefined, opts)).keys;
  }

  /**
   * Removes a key by id, name or fingerprint.
   * @example await roost.sshKeys.remove('SHA256:…');
   */
  async remove(ref: string, opts: CallOpts = {}): Promise<void> {
    await this.roost.request<void>('DELETE', `/api/v1/ssh-keys/${encodeURIComponent(ref)}`, undefined, opts);
  }
}

/**
 * `roost.quotas`: what each user may hold at once (live sandboxes and their CPUs, memory and
 * pids), the longest timeout a run or exec may ask, and how much run output is kept. Past a
 * limit the API answers QUOTA_EXCEEDED.
 */
export class Quotas {
  constructor(private readonly roost: Roost) {}

  /**
   * Your limits and what you use now.
   * @example const { limits, usage } = await roost.quotas.mine(); // limits.sandboxes - usage.sandboxes more
   */
  mine(opts: CallOpts = {}): Promise<Quota> {
    return this.roost.request<Quota>('GET', '/api/v1/quota', undefined, opts);
  }

  /**
   * A user's limits and use, by name or id (admin token needed).
   * @example const quota = await roost.quotas.get('bob');
   */
  get(user: string, opts: CallOpts = {}): Promise<Quota> {
    return this.roost.request<Quota>('GET', `/api/v1/users/${encodeURIComponent(user)}/quota`, undefined, opts);
  }

  /**
   * Sets some of a user's limits (admin token needed; the admin's own included). `null` returns
   * a limit to the daemon's default; limits not given stay as they are.
   * @example await roost.quotas.set('bob', { memoryMb: 8192, sandboxes: null });
   */
  set(user: string, limits: UpdateQuotaRequest, opts: CallOpts = {}): Promise<Quota> {
    return this.roost.request<Quota>('PATCH', `/api/v1/users/${encodeURIComponent(user)}/quota`, limits, opts);
  }
}

/** `roost.sandboxes`: the sandbox collection. */
export class Sandboxes {
  constructor(private readonly roost: Roost) {}

  /**
   * Creates a sandbox and resolves once a command can run in it.
   * @example const sb = await roost.sandboxes.create({ name: 'dev' });
   */
  async create(opts: CreateSandboxOpts = {}): Promise<SandboxHandle> {
    const { signal, ...body } = opts;
    const sandbox = await this.roost.request<Sandbox>('POST', '/api/v1/sandboxes', body, { signal });
    return new SandboxHandle(this.roost, sandbox);
  }

  /**
   * Your sandboxes, newest first; `all` includes ended ones.
   * @example const list = await roost.sandboxes.list({ all: true });
   */
  async list(opts: { all?: boolean } & CallOpts = {}): Promise<Sandbox[]> {
    const query = opts.all ? '?all=true' : '';
    const { sandboxes } = await this.roost.request<{ sandboxes: Sandbox[] }>('GET', `/api/v1/sandboxes${query}`, undefined, opts);
    return sandboxes;
  }

  /**
   * One sandbox by id or name.
   * @example const sb = await roost.sandboxes.get('dev');
   */
  async get(ref: string, opts: CallOpts = {}): Promise<SandboxHandle> {
    return new SandboxHandle(this.roost, await this.roost.request<Sandbox>('GET', sandboxPath(ref), undefined, opts));
  }

  /**
   * Changes a sandbox's settings.
   * @example await roost.sandboxes.update('dev', { sshAgentForwarding: true });
   * @example await roost.sandboxes.update('dev', { allowNet: ['pypi.org', '203.0.113.0/24'], denyNet: ['evil.example'] });
   */
  update(ref: string, settings: UpdateSandboxRequest, opts: CallOpts = {}): Promise<Sandbox> {
    return this.roost.request<Sandbox>('PATCH', sandboxPath(ref), settings, opts);
  }

  /**
   * Stops a sandbox; its record and workspace stay. Resolves once the workspace's final sync is
   * done; if the store did not take it, `statusReason` and `workspace.failure` say why (the local
   * copy is kept).
   * @example const { statusReason } = await roost.sandboxes.stop('dev');
   */
  stop(ref: string, opts: CallOpts = {}): Promise<Sandbox> {
    return this.roost.request<Sandbox>('POST', `${sandboxPath(ref)}/stop`, undefined, opts);
  }

  /**
   * Starts a stopped sandbox again (same id, name and settings) and resolves once it runs. Its
   * workspace is mounted again: the files it wrote before the stop are there.
   * @example await roost.sandboxes.start('dev');
   */
  start(ref: string, opts: CallOpts = {}): Promise<Sandbox> {
    return this.roost.request<Sandbox>('POST', `${sandboxPath(ref)}/start`, undefined, opts);
  }

  /**
   * Stops a sandbox and starts it again; resolves once it runs.
   * @example await roost.sandboxes.restart('dev');
   */
  restart(ref: string, opts: CallOpts = {}): Promise<Sandbox> {
    return this.roost.request<Sandbox>('POST', `${sandboxPath(ref)}/restart`, undefined, opts);
  }

  /**
   * Removes your ended runs with their logs and, with `stopped`, your stopped sandboxes; never a
   * live one. Resolves with what was removed.
   * @example const removed = await roost.sandboxes.prune({ stopped: true });
   */
  async prune(request: PruneRequest = {}, opts: CallOpts = {}): Promise<Sandbox[]> {
    const result = await this.roost.request<PruneResult>('POST', '/api/v1/sandboxes/prune', request, opts);
    return result.removed;
  }

  /**
   * Removes a sandbox and everything it made except its workspace (`roost.workspaces.remove` removes that).
   * @example await roost.sandboxes.remove('dev');
   */
  async remove(ref: string, opts: CallOpts = {}): Promise<void> {
    await this.roost.request<void>('DELETE', sandboxPath(ref), undefined, opts);
  }

  /**
   * Pushes the sandbox's workspace now (a running sandbox is frozen for the moment of the capture).
   * @example const { snapshot } = await roost.sandboxes.sync('dev');
   */
  sync(ref: string, opts: CallOpts = {}): Promise<SyncResult> {
    return this.roost.request<SyncResult>('POST', `${sandboxPath(ref)}/sync`, undefined, opts);
  }

  /**
   * Changes the enforced size of the sandbox's workspace in GB (2^30 bytes; null: none).
   * @example await roost.sandboxes.resize('dev', 20);
   */
  resize(ref: string, diskGb: number | null, opts: CallOpts = {}): Promise<Sandbox> {
    return this.roost.request<Sandbox>('POST', `${sandboxPath(ref)}/resize`, { diskGb }, opts);
  }
}

/**
 * `roost.workspaces`: everything sandboxes wrote to their filesystems, kept apart from them. A
 * run with `workspaceId` mounts one (made on first use); a persistent sandbox gets one named
 * after itself.
 */
export class Workspaces {
  constructor(private readonly roost: Roost) {}

  /**
   * Your workspaces, newest first.
   * @example const list = await roost.workspaces.list();
   */
  async list(opts: CallOpts = {}): Promise<Workspace[]> {
    const { workspaces } = await this.roost.request<{ workspaces: Workspace[] }>('GET', '/api/v1/workspaces', undefined, opts);
    return workspaces;
  }

  /**
   * One workspace by name or id, with disk use and sync state.
   * @example const { usedBytes, lastSyncedAt } = await roost.workspaces.get('proj');
   */
  get(ref: string, opts: CallOpts = {}): Promise<Workspace> {
    return this.roost.request<Workspace>('GET', workspacePath(ref), undefined, opts);
  }

  /**
   * Removes a workspace here and in the store; refused (WORKSPACE_IN_USE) while a sandbox uses it.
   * @example await roost.workspaces.remove('proj');
   */
  async remove(ref: string, opts: CallOpts = {}): Promise<void> {
    await this.roost.request<void>('DELETE', workspacePath(ref), undefined, opts);
  }

  /**
   * A new workspace with this one's state now (copy-on-write; a running sandbox is frozen for the moment of the capture).
   * @example const copy = await roost.workspaces.fork('proj', 'proj-experiment');
   */
  fork(ref: string, name: string, opts: { diskGb?: number } & CallOpts = {}): Promise<Workspace> {
    const { signal, ...rest } = opts;
    return this.roost.request<Workspace>('POST', `${workspacePath(ref)}/fork`, { name, ...rest }, { signal });
  }

  /**
   * The snapshots the store keeps of it, oldest first.
   * @example const snapshots = await roost.workspaces.snapshots('proj');
   */
  async snapshots(ref: string, opts: CallOpts = {}): Promise<WorkspaceSnapshot[]> {
    const { snapshots } = await this.roost.request<{ snapshots: WorkspaceSnapshot[] }>('GET', `${workspacePath(ref)}/snapshots`, undefined, opts);
    return snapshots;
  }

  /**
   * Puts the workspace back to one of its snapshots; refused while a live sandbox mounts it.
   * @example await roost.workspaces.restore('proj', snapshots[0].id);
   */
  restore(ref: string, snapshot: string, opts: CallOpts = {}): Promise<Workspace> {
    return this.roost.request<Workspace>('POST', `${workspacePath(ref)}/restore`, { snapshot }, opts);
  }
}

function workspacePath(ref: string): string {
  return `/api/v1/workspaces/${encodeURIComponent(ref)}`;
}

/**
 * One sandbox.
 *
 * @example
 * const sb = await roost.sandboxes.create();
 * const { exitCode } = await sb.exec(['true']).wait();
 * await sb.remove();
 */
export class SandboxHandle {
  constructor(
    private readonly roost: Roost,
    /** The sandbox as the daemon last described it. */
    readonly info: Sandbox,
  ) {}

  get id(): string {
    return this.info.id;
  }

  get name(): string {
    return this.info.name;
  }

  /** @example const out = sb.exec(['bash', '-c', 'echo hi']); */
  exec(command: string[], opts: ExecOpts = {}): CommandHandle {
    return this.roost.exec(this.info.id, command, opts);
  }

  /** @example await sb.stop(); */
  stop(opts: CallOpts = {}): Promise<Sandbox> {
    return this.roost.sandboxes.stop(this.info.id, opts);
  }

  /** @example await sb.start(); */
  start(opts: CallOpts = {}): Promise<Sandbox> {
    return this.roost.sandboxes.start(this.info.id, opts);
  }

  /** @example await sb.restart(); */
  restart(opts: CallOpts = {}): Promise<Sandbox> {
    return this.roost.sandboxes.restart(this.info.id, opts);
  }

  /** @example await sb.remove(); */
  remove(opts: CallOpts = {}): Promise<void> {
    return this.roost.sandboxes.remove(this.info.id, opts);
  }
}

function toBase64(bytes: Uint8Array): string {
  if (typeof Buffer !== 'undefined') return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('base64');
  let text = '';
  for (let offset = 0; offset < bytes.length; offset += 0x8000) text += String.fromCharCode(...bytes.subarray(offset, offset + 0x8000));
  return btoa(text);
}

function sandboxPath(ref: string): string {
  return `/api/v1/sandboxes/${encodeURIComponent(ref)}`;
}
