// The ports: the small interfaces core needs from the outside world. Each has a fake in
// @roost/testkit and a conformance suite that the fake and every real adapter pass.
import type { Duplex, Readable, Writable } from 'node:stream';
import type { EgressRules } from './egress-rules.js';

/** Resource limits of one sandbox. */
export interface SandboxLimits {
  cpus: number;
  memoryMb: number;
  pids: number;
  /** RLIMIT_NOFILE (soft and hard) of every process in the sandbox. */
  openFiles: number;
}

/** none: no way out of the sandbox's netns; nat: egress through the host, with DNS. */
export type NetworkMode = 'none' | 'nat';

/** What a runtime needs to make one sandbox. */
export interface SandboxSpec {
  /** Unique id; everything the driver creates carries it so reconciliation can find it. */
  id: string;
  /** Becomes the hostname inside the sandbox. */
  hostname: string;
  /** Image reference, resolved by the runtime's image store (e.g. "debian"). */
  image: string;
  limits: SandboxLimits;
  network: NetworkMode;
  /** Environment every process in the sandbox starts with. */
  env: Record<string, string>;
  /**
   * Index of the sandbox's own block of host user and group ids, allocated in the store
   * (`Store.allocateIdRange`): no two sandboxes hold the same one, so a process that escapes
   * one sandbox owns none of another's files or processes. The runtime decides which host ids
   * an index stands for; a runtime that cannot give each sandbox its own block (e.g. the
   * kernel lacks idmapped mounts) ignores it and says so in `diagnose()`.
   */
  idRange: number;
  /** Per-sandbox egress rules (egress-rules.ts); apply with network 'nat'. Absent: none. */
  egress?: EgressRules;
  /** The workspace to mount as its writable layer (`Workspaces.open`). Absent: a layer of the
   *  sandbox's own that goes with it. The runtime never deletes a workspace. */
  workspace?: WorkspaceMount;
}

export interface ExecOpts {
  /** argv; the first element is looked up in PATH inside the sandbox. */
  command: string[];
  env?: Record<string, string>;
  cwd?: string;
  /** Whether stdin is connected; when false the process reads EOF. */
  stdin?: boolean;
  /** A user of the sandbox's /etc/passwd, by name or uid (default root). Its uid and gid run
   *  the process; HOME, USER and LOGNAME are set and cwd defaults to its home. Unknown:
   *  rejects with code USER_NOT_FOUND. */
  user?: string;
  /** Run under a new pseudo-terminal (controlling tty, TERM set). stdin and stdout then carry
   *  the terminal's input and output, and the process sees a terminal on all three; stderr
   *  carries only the driver's own errors. */
  tty?: TerminalOpts;
}

export interface TerminalOpts {
  /** Becomes TERM, e.g. "xterm-256color". */
  term: string;
  /** Size in characters; 0 means unknown (as an SSH client sends when it has no terminal
   *  itself); values above 65535 are clamped. */
  cols: number;
  rows: number;
}

/** An address inside a sandbox's own network: TCP (name or IP) or a unix socket path. */
export type SandboxAddress = { host: string; port: number } | { path: string };

/** Who opens a connection from inside a sandbox. */
export interface ConnectOpts {
  /** A user of the sandbox's /etc/passwd, as in ExecOpts.user (default root): the connection
   *  is made with that user's rights, so what the user may not open (root's unix sockets)
   *  stays closed. Unknown: rejects with code USER_NOT_FOUND. */
  user?: string;
}

export interface ListenOpts {
  /** Where to listen inside the sandbox; port 0 picks a free one. */
  address: SandboxAddress;
  /** A user of the sandbox's /etc/passwd, as in ExecOpts.user (default root): the socket is
   *  bound with that user's rights (no port below 1024 unless root; a unix socket owned by
   *  that user, only in a directory it may write). Unknown: rejects with code USER_NOT_FOUND. */
  user?: string;
  /** Each accepted connection, as a stream with half-close and backpressure. `peer` is the
   *  TCP client's address (absent for unix sockets). Like a socket, the stream emits 'error'
   *  (code CONNECTION_LOST) when the connection fails midway: handle it. */
  onConnection(stream: Duplex, peer?: { host: string; port: number }): void;
}

/** A listening socket inside a sandbox (SSH -R, agent and X11 forwarding). */
export interface SandboxListener {
  /** Where it listens: with the port the system chose when 0 was asked. */
  readonly address: SandboxAddress;
  /** Resolves when it no longer listens: after close(), or when the sandbox went away. */
  readonly closed: Promise<void>;
  /** Stops listening and drops its open connections. */
  close(): Promise<void>;
}

export interface ExitStatus {
  /** Exit code, or 128+signal when the process was killed by a signal. */
  exitCode: number;
  /** Signal name when the process was killed by a signal. */
  signal?: string;
}

/** A process running inside a sandbox. Its output streams apply backpressure. */
export interface ProcessHandle {
  stdout: Readable;
  stderr: Readable;
  /** Present when ExecOpts.stdin was true. */
  stdin?: Writable;
  /** Resolves when the process has exited (not when its output pipes close: background
   *  children may keep those open). */
  wait(): Promise<ExitStatus>;
  /** Sends a signal to the process inside the sandbox (default SIGKILL). */
  kill(signal?: NodeJS.Signals): void;
  /** Sets the terminal's size; the foreground process gets SIGWINCH. Present with ExecOpts.tty. */
  resize?(cols: number, rows: number): void;
}

/** Something missing on the host, with the command that fixes it. */
export interface HostProblem {
  problem: string;
  fix: string;
}

/** Something a sandbox left on the host that no held sandbox accounts for. */
export interface Leftover {
  sandboxId: string;
  /** e.g. "cgroup /sys/fs/cgroup/memory/roost/sb_…" or "veth rv1234…" */
  what: string;
}

export interface RuntimeDiagnosis {
  problems: HostProblem[];
  leftovers: Leftover[];
}

export interface RuntimeInfo {
  /** e.g. "crun 1.8.1" */
  engine: string;
  /** The highest open-files limit this runtime can give a sandbox on this host. */
  maxOpenFiles: number;
  /** Whether sandboxes may have egress (network 'nat') here. */
  natAllowed: boolean;
  /** argv of an SFTP server (the protocol on stdin/stdout) that works in every sandbox of this
   *  runtime, whatever its image holds. */
  sftpServer: string[];
}

/** Where a runtime's sandbox processes run. One implementation per driver. */
export interface Runtime {
  readonly info: RuntimeInfo;
  /** Creates and starts a sandbox; resolves once a command can be executed in it. */
  create(spec: SandboxSpec): Promise<void>;
  /**
   * Gives a sandbox this runtime made earlier (a warm-pool member, same id and image) the
   * rest of a new spec: hostname, limits, network, env. Resolves once execs see all of it.
   */
  configure(spec: SandboxSpec): Promise<void>;
  exec(id: string, opts: ExecOpts): Promise<ProcessHandle>;
  /** Opens a TCP (or unix socket) connection from inside the sandbox's network, so it reaches
   *  what the sandbox reaches (e.g. its own 127.0.0.1) and never the host's. Rejects with code
   *  CONNECT_FAILED and the reason (e.g. "connect 127.0.0.1 port 9: Connection refused").
   *  The stream half-closes (end() is EOF for the peer); like a socket it emits 'error'
   *  (code CONNECTION_LOST) when the connection fails midway. */
  connect(id: string, address: SandboxAddress, opts?: ConnectOpts): Promise<Duplex>;
  /** Listens inside the sandbox's network. Rejects with code LISTEN_FAILED and the reason
   *  (e.g. "listen tcp 127.0.0.1 port 22: Address already in use"). */
  listen(id: string, opts: ListenOpts): Promise<SandboxListener>;
  /**
   * Changes a running sandbox's limits: cpus, memory and pids at once (its cgroup), openFiles
   * for the processes started afterwards (running ones keep theirs). Rejects with code
   * SANDBOX_NOT_RUNNING for a sandbox it does not hold, and with the engine's reason when the
   * kernel refuses (e.g. a memory limit below what the sandbox uses now).
   */
  updateLimits(id: string, limits: SandboxLimits): Promise<void>;
  /** Stops every process of the sandbox where it is (the cgroup freezer) until `thaw`; what
   *  they wrote before is on disk for a point-in-time capture. Rejects SANDBOX_NOT_RUNNING. */
  freeze(id: string): Promise<void>;
  /** Lets a frozen sandbox run again. Idempotent for a running one. */
  thaw(id: string): Promise<void>;
  /** Replaces a running sandbox's egress rules; new connections see them at once. */
  setEgressRules(id: string, rules: EgressRules): Promise<void>;
  /** Stops and removes everything the sandbox made. Idempotent: unknown ids resolve. */
  destroy(id: string): Promise<void>;
  /** Host prerequisites that are missing and residue of sandboxes it no longer holds. */
  diagnose(): Promise<RuntimeDiagnosis>;
  /** How many processes the kernel's OOM killer has ended in the sandbox so far. */
  oomKillCount(id: string): Promise<number>;
  /** Ids of sandboxes this runtime currently holds (for reconciliation after a restart). */
  list(): Promise<string[]>;
  /** Releases what the runtime itself holds (not the sandboxes). */
  close(): Promise<void>;
}

/** What a Network needs to attach one sandbox. */
export interface NetworkSandbox {
  id: string;
  /** The sandbox's network namespace, as a path (`/proc/<init pid>/ns/net`, `/run/netns/<name>`). */
  netnsPath: string;
  mode: NetworkMode;
  /** Applied with mode 'nat' (and kept for when a 'none' sandbox gets NAT). Absent: none. */
  egress?: EgressRules;
}

/** What an attached sandbox got: its address and what its /etc/resolv.conf should say. */
export interface NetworkAttachment {
  address: string;
  /** The address its DNS and default route (with NAT) go to. */
  gateway: string;
  resolvConf: string;
}

/** An attached sandbox as the Network holds it: what a restarted daemon passes to `adopt`. */
export interface AttachedSandbox {
  id: string;
  address: string;
  mode: NetworkMode;
  egress: EgressRules;
  /** Absent: the sandbox is not running (its address stays reserved, nothing else is installed). */
  netnsPath?: string;
}

/**
 * A sandbox's place on the host's network: an address of the daemon's subnet, isolation from
 * other sandboxes and from the host, egress (NAT, DNS, per-sandbox rules) when asked for.
 * Reaching a port inside a sandbox is the Runtime's `connect` (a relay in the sandbox's netns,
 * since a port bound to 127.0.0.1 there is reachable from nowhere else).
 */
export interface Network {
  /** Whether sandboxes may have mode 'nat' here. */
  readonly natAllowed: boolean;
  /** Gives the sandbox an address and connects its netns. Rejects (and undoes its part) on any failure. */
  attach(sandbox: NetworkSandbox): Promise<NetworkAttachment>;
  /**
   * Replaces an attached sandbox's egress rules and, with mode 'nat', gives a 'none' sandbox
   * NAT (a mode never narrows: a NAT sandbox stays one). New connections see the change at once.
   */
  setEgress(id: string, change: { mode?: NetworkMode; rules: EgressRules }): Promise<NetworkAttachment>;
  /** Removes everything attach and setEgress made for the sandbox and frees its address. Idempotent. */
  detach(id: string): Promise<void>;
  /** Re-learns sandboxes a previous daemon attached (from the runtime's saved state); call once, before any attach. */
  adopt(sandboxes: AttachedSandbox[]): Promise<void>;
  /** Sandboxes attached (or adopted) now. */
  list(): Promise<AttachedSandbox[]>;
  /** What the network holds on the host for sandboxes other than `held` (e.g. veths). */
  diagnose(held: Set<string>): Promise<Leftover[]>;
  /** Releases what the network itself holds (the DNS forwarder), not the sandboxes' attachments. */
  close(): Promise<void>;
}

export type SandboxStatus = 'pending' | 'running' | 'sleeping' | 'completed' | 'error' | 'stopped';

export interface SandboxRecord {
  id: string;
  ownerId: string;
  name: string;
  image: string;
  status: SandboxStatus;
  persistent: boolean;
  limits: SandboxLimits;
  network: NetworkMode;
  /** Whether SSH sessions may forward the client's agent into it (ssh -A); off unless the owner says. */
  sshAgentForwarding: boolean;
  /** The user SSH logins run as when the SSH user name does not say (box+name). */
  defaultUser: string;
  env: Record<string, string>;
  /** Per-sandbox egress rules on top of the daemon's; empty lists: none. */
  egress: EgressRules;
  /** Exit code of the script of a one-shot run, once it ended. */
  exitCode: number | null;
  /** Why the sandbox is in its status, for humans (e.g. "timed out after 5 s"). */
  statusReason: string | null;
  /** Bytes of its logged output trimmed (oldest first) to keep its owner within the log quota. */
  logTrimmedBytes: number;
  /** The workspace it mounts as its writable layer (`WorkspaceRecord.id`); null: a layer of its own. */
  workspaceId: string | null;
  createdAt: Date;
  updatedAt: Date;
}

/** A workspace as the store keeps it: what it is called and how big it may get; its files are the Workspaces port's. */
export interface WorkspaceRecord {
  /** "ws_…" */
  id: string;
  ownerId: string;
  /** Unique per owner; the sandbox-name rule. */
  name: string;
  /** Enforced size in bytes; null: none beyond the host's. */
  diskBytes: number | null;
  /** The workspace it was forked from (null: made empty). */
  baseId: string | null;
  createdAt: Date;
  updatedAt: Date;
  /** When a sandbox last mounted it. */
  lastUsedAt: Date | null;
}

export interface WorkspacePatch {
  diskBytes?: number | null;
  lastUsedAt?: Date;
}

/** Statuses whose sandbox holds its workspace: at most one of them per workspace. */
export const workspaceHoldingStatuses: readonly SandboxStatus[] = ['pending', 'running', 'sleeping'];

export interface UserRecord {
  id: string;
  name: string;
  isAdmin: boolean;
  createdAt: Date;
}

export interface TokenRecord {
  id: string;
  userId: string;
  /** sha256 of the token, hex. The token itself is never stored. */
  tokenHash: string;
  description: string;
  createdAt: Date;
  lastUsedAt: Date | null;
}

export interface SshKeyRecord {
  id: string;
  userId: string;
  name: string;
  /** e.g. "ssh-ed25519" */
  type: string;
  /** The public key blob, base64 (the second field of an authorized_keys line). */
  publicKey: string;
  /** "SHA256:…" of the blob; unique: a key belongs to one user. */
  fingerprint: string;
  createdAt: Date;
  lastUsedAt: Date | null;
}

export interface SandboxPatch {
  status?: SandboxStatus;
  limits?: SandboxLimits;
  sshAgentForwarding?: boolean;
  defaultUser?: string;
  egress?: EgressRules;
  exitCode?: number | null;
  statusReason?: string | null;
  workspaceId?: string | null;
}

/** A condition on a store change, checked in its transaction. */
export interface SandboxGuard {
  fromStatuses?: SandboxStatus[];
  admit?: (usage: UserUsage) => void;
}

export interface EndedRun {
  id: string;
  name: string;
  logBytes: number;
  createdAt: Date;
}

/** Statuses whose sandbox keeps its name: no other of the owner's may take it. */
export const nameHoldingStatuses: readonly SandboxStatus[] = ['pending', 'running', 'sleeping', 'stopped'];

/** Per-user limits (see core/src/quotas.ts). Totals are over the user's live sandboxes. */
export interface QuotaLimits {
  /** Live sandboxes (pending, running, sleeping) at once. */
  sandboxes: number;
  cpus: number;
  memoryMb: number;
  pids: number;
  /** The longest timeout a run or exec may ask, in seconds. */
  timeoutSec: number;
  /** Logged output of the user's runs kept in the store; past it the oldest is trimmed. */
  logBytes: number;
}

/** What an admin set for one user; absent keys follow the daemon's defaults. */
export type QuotaOverrides = Partial<QuotaLimits>;

/** A change of overrides: null returns a limit to the daemon's default; absent keys stay. */
export type QuotaChange = { [K in keyof QuotaLimits]?: QuotaLimits[K] | null };

/** What a user holds now. */
export interface UserUsage {
  /** Live sandboxes and the sums of their limits. */
  sandboxes: number;
  cpus: number;
  memoryMb: number;
  pids: number;
  logBytes: number;
}

/** What a user's workspaces take (for the workspace quota). */
export interface WorkspaceHoldings {
  workspaces: number;
  /** Sum of their sizes (`diskBytes`; a workspace without one counts as 0). */
  diskBytes: number;
}

/** Who holds which host id range (see `SandboxSpec.idRange`). */
export interface IdRangeAllocation {
  /** A sandbox id; warm-pool members hold one before any record names them. */
  holderId: string;
  idRange: number;
}

/** State: users, tokens, sandboxes. */
export interface Store {
  createUser(user: UserRecord): Promise<void>;
  getUser(id: string): Promise<UserRecord | undefined>;
  getUserByName(name: string): Promise<UserRecord | undefined>;

  createToken(token: TokenRecord): Promise<void>;
  findTokenByHash(tokenHash: string): Promise<TokenRecord | undefined>;
  touchToken(id: string, at: Date): Promise<void>;

  /** Fails with code SSH_KEY_TAKEN when a key with that fingerprint exists (any user). */
  insertSshKey(key: SshKeyRecord): Promise<void>;
  listSshKeys(userId: string): Promise<SshKeyRecord[]>;
  getSshKeyByFingerprint(fingerprint: string): Promise<SshKeyRecord | undefined>;
  deleteSshKey(id: string): Promise<void>;
  touchSshKey(id: string, at: Date): Promise<void>;

  /**
   * Fails with code SANDBOX_NAME_TAKEN when the owner already has a sandbox of that name that
   * holds it: a live or a stopped one (see `nameHoldingStatuses`).
   * `admit` is called with the owner's live use in the same transaction as the insert (so no
   * other insert comes between); whatever it throws refuses the sandbox.
   */
  insertSandbox(sandbox: SandboxRecord, admit?: (usage: UserUsage) => void): Promise<void>;
  getSandbox(id: string): Promise<SandboxRecord | undefined>;
  /** Every record of the owner with that name: the one holding it first, then the newest. */
  sandboxesNamed(ownerId: string, name: string): Promise<SandboxRecord[]>;
  listSandboxes(filter: { ownerId?: string }): Promise<SandboxRecord[]>;
  /**
   * Applies the patch; with a guard, only while the sandbox's status is one of `fromStatuses`
   * and after `admit` accepted the owner's live use, both in the same transaction as the change
   * (what `admit` throws refuses it). Resolves whether a record was changed; a patch that makes
   * a name holder of a record whose name another holds fails with SANDBOX_NAME_TAKEN.
   */
  updateSandbox(id: string, patch: SandboxPatch, at: Date, guard?: SandboxGuard): Promise<boolean>;
  /** Deletes the record (and its log count); with `fromStatuses`, only in those. Resolves whether it went. */
  deleteSandbox(id: string, guard?: Pick<SandboxGuard, 'fromStatuses'>): Promise<boolean>;
  /** The owner's ended runs (status completed or error), newest first, with their logged bytes. */
  listEndedRuns(ownerId: string): Promise<EndedRun[]>;

  /**
   * The id range `holderId` holds; when it holds none, the lowest free one, now its own until
   * released. Kept apart from sandbox records: pool members hold ranges before they have one.
   */
  allocateIdRange(holderId: string): Promise<number>;
  /** Frees the holder's range for reuse (no-op when it holds none). */
  releaseIdRange(holderId: string): Promise<void>;
  listIdRanges(): Promise<IdRangeAllocation[]>;

  appendLog(sandboxId: string, chunk: LogChunk): Promise<void>;
  /** Chunks with seq > afterSeq, oldest first, at most `limit`. */
  readLogs(sandboxId: string, afterSeq: number, limit: number): Promise<LogChunk[]>;
  deleteLogs(sandboxId: string): Promise<void>;
  /**
   * Deletes the owner's oldest logged output, oldest sandbox first and within it oldest chunk
   * first (the last one cut to its tail), until at most maxBytes remain. Each sandbox's
   * logTrimmedBytes grows by what it lost. Resolves with the bytes removed.
   */
  trimLogs(ownerId: string, maxBytes: number): Promise<number>;

  /**
   * Fails with WORKSPACE_NAME_TAKEN when the owner has a workspace of that name. `admit` gets
   * the owner's workspaces in the same transaction as the insert; what it throws refuses it.
   */
  insertWorkspace(workspace: WorkspaceRecord, admit?: (held: WorkspaceHoldings) => void): Promise<void>;
  getWorkspace(id: string): Promise<WorkspaceRecord | undefined>;
  workspaceNamed(ownerId: string, name: string): Promise<WorkspaceRecord | undefined>;
  /** The owner's workspaces, newest first. */
  listWorkspaces(ownerId: string): Promise<WorkspaceRecord[]>;
  updateWorkspace(id: string, patch: WorkspacePatch, at: Date): Promise<boolean>;
  /**
   * Deletes the record unless a sandbox holds it: a live one (see `workspaceHoldingStatuses`)
   * or a stopped one (which mounts it again at its next start): then fails WORKSPACE_IN_USE
   * naming that sandbox. Resolves whether it went.
   */
  deleteWorkspace(id: string): Promise<boolean>;
  /** The sandboxes that mount the workspace: live ones first, then stopped ones (ended runs never). */
  sandboxesUsingWorkspace(workspaceId: string): Promise<SandboxRecord[]>;

  usageOf(userId: string): Promise<UserUsage>;
  getQuotaOverrides(userId: string): Promise<QuotaOverrides>;
  /** Applies a change to the user's overrides in one transaction; resolves with the result. */
  changeQuotaOverrides(userId: string, change: QuotaChange, at: Date): Promise<QuotaOverrides>;

  close(): Promise<void>;
}

/** One piece of a run script's output, kept for `roost logs`. */
export interface LogChunk {
  /** 1, 2, 3… per sandbox, in the order the output arrived. */
  seq: number;
  stream: 'stdout' | 'stderr';
  data: Uint8Array;
}

export interface Clock {
  now(): Date;
  setTimeout(fn: () => void, ms: number): { cancel(): void };
}

/** Structured logger (one JSON line per event). */
export interface Logger {
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
  error(fields: Record<string, unknown>, msg: string): void;
  debug(fields: Record<string, unknown>, msg: string): void;
}

// ---------------------------------------------------------------------------------------------
// Workspaces: the writable layer of a sandbox (everything it wrote to its filesystem), kept
// apart from the sandbox so it outlives it. Ids are core's (the store's workspace records);
// the port knows nothing of owners or names. See docs/workspaces.md.

/** Runs `capture` while every process that writes to the workspace is stopped (the cgroup
 *  frozen), so what it captures is one point in time. Without one, the workspace is not in use. */
export type Quiesce = <T>(capture: () => Promise<T>) => Promise<T>;

/** Where the runtime finds a workspace to mount as a sandbox's writable layer. */
export interface WorkspaceMount {
  /** A directory holding `upper/` and `work/` on one filesystem (overlayfs needs both there).
   *  Files in `upper/` are owned by the canonical ids (the image's on-disk owners: root of the
   *  sandbox = SHIFT_BASE in runtime-oci), whatever host id range the sandbox gets. */
  dir: string;
  /** Read-only layers under `upper/`, topmost first (a fork's base), before the image. */
  lowers: string[];
}

export interface WorkspaceUsage {
  /** Bytes the workspace's own writes take (a fork's shared base not counted). */
  usedBytes: number;
  /** Enforced size; null: no limit beyond the filesystem's. */
  limitBytes: number | null;
}

/** Where a workspace stands with the store (S3); all null/0 for a store-less implementation. */
export interface WorkspaceSyncState {
  /** When the last snapshot the store acknowledged was taken. */
  lastSyncedAt: Date | null;
  /** Bytes changed since then (an estimate; null when unknown). */
  pendingBytes: number | null;
  /** Set while syncs fail: since when, and the last reason. */
  failingSince: Date | null;
  failure: string | null;
}

export interface WorkspaceSnapshot {
  id: string;
  takenAt: Date;
  /** Bytes and files of the workspace's own layer at that point. */
  bytes: number;
  files: number;
}

export interface WorkspacesInfo {
  /** 'local' (this host's disk only) or 's3' (synced to an object store). */
  kind: string;
  /** `--disk` is enforced (a writer past it fails, the host and others unaffected). */
  diskLimits: boolean;
}

export interface Workspaces {
  readonly info: WorkspacesInfo;
  /** Makes an empty workspace, or one forked copy-on-write from `base`'s latest snapshot (the
   *  base's current state when no sandbox uses it). Rejects WORKSPACE_EXISTS for a taken id. */
  create(id: string, opts: { diskBytes?: number | null; base?: string }): Promise<void>;
  /** Makes the workspace ready to mount: restores it from the store when the local copy is
   *  missing or older than the store's newest snapshot. Rejects WORKSPACE_UNREADABLE (with the
   *  reason) rather than ever giving an empty workspace when a snapshot exists but cannot be read. */
  open(id: string): Promise<WorkspaceMount>;
  /** The sandbox that mounted it is gone: a last sync (implementations with a store) resolves
   *  only once the store acknowledged it, or rejects saying the workspace is not yet safe there
   *  (the local copy is kept either way). */
  release(id: string): Promise<void>;
  /** A new workspace `to` holding `from`'s state at this moment (in use: under `quiesce`). */
  fork(from: string, to: string, opts?: { quiesce?: Quiesce; diskBytes?: number | null }): Promise<void>;
  /** Takes a snapshot now and, with a store, pushes it; resolves once the store has it. */
  sync(id: string, opts?: { quiesce?: Quiesce }): Promise<WorkspaceSnapshot>;
  snapshots(id: string): Promise<WorkspaceSnapshot[]>;
  /** Replaces the workspace's state with that snapshot's (not in use). */
  restore(id: string, snapshotId: string): Promise<void>;
  /** Changes the enforced size (null: none). Rejects DISK_TOO_SMALL below what it uses. */
  resize(id: string, diskBytes: number | null): Promise<void>;
  usage(id: string): Promise<WorkspaceUsage>;
  syncState(id: string): Promise<WorkspaceSyncState>;
  /** Removes it here and in the store. Idempotent. */
  delete(id: string): Promise<void>;
  /** Ids of the workspaces held here (for reconciliation and doctor). */
  list(): Promise<string[]>;
  close(): Promise<void>;
}
