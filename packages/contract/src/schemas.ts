// Every request and response body of the HTTP API. The server validates with these, the
// OpenAPI document is generated from these, the SDK's types are inferred from these.
import { z } from 'zod';
import { unixUserPattern } from './names.js';

export const sandboxStatusSchema = z.enum(['pending', 'running', 'sleeping', 'completed', 'error', 'stopped']);

const envSchema = z
  .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'environment variable names are letters, digits and _'), z.string())
  .describe('Environment variables for the sandbox\'s processes');

export const networkModeSchema = z
  .enum(['none', 'nat'])
  .describe('none: no way out of the sandbox; nat: egress to the outside through the host, with DNS');

/** setTimeout holds at most 2^31-1 ms; a longer timeout would fire at once, so it is refused. */
export const maxTimeoutSec = Math.floor((2 ** 31 - 1) / 1000);

const timeoutSecSchema = z
  .number()
  .positive()
  .max(maxTimeoutSec, `at most ${maxTimeoutSec} s (about 24.8 days): the longest a timer can wait`);
const netRulesSchema = z
  .array(z.string().min(1).max(253))
  .max(64);

const unixUserSchema = z
  .string()
  .regex(unixUserPattern, 'a user name of the image (letters, digits, _ . -) or a uid');

/** Options a sandbox is made with, shared by create and run. */
const sandboxOptions = {
  name: z.string().optional().describe('Sandbox name, a DNS label (core enforces the rule); generated when absent'),
  image: z.string().optional().describe('Image reference; the default image when absent'),
  env: envSchema.optional(),
  cpus: z.number().positive().max(256).optional(),
  memoryMb: z.number().int().min(16).max(1024 * 1024).optional(),
  pids: z.number().int().min(8).max(4_194_304).optional().describe('Most processes and threads at once'),
  openFiles: z.number().int().min(64).max(1_048_576).optional().describe('Open files per process (RLIMIT_NOFILE)'),
  network: networkModeSchema.optional().describe('Default: the daemon\'s default (none unless configured)'),
  sshAgentForwarding: z.boolean().optional().describe('Let SSH sessions forward the client\'s agent into it (ssh -A); default false'),
  defaultUser: unixUserSchema.optional().describe('The user SSH logins run as unless the SSH user says box+name; default root'),
  allowNet: netRulesSchema
    .optional()
    .describe('Egress allow-list (with network nat): IPv4 ranges (203.0.113.0/24) and domain names (example.com, *.example.com); absent: every public destination'),
  denyNet: netRulesSchema.optional().describe('Egress deny-list: IPv4 ranges and domain names; beats the allow-list; denied names get NXDOMAIN'),
  // Mags: workspace_id, base_workspace_id, disk_gb.
  workspaceId: z
    .string()
    .min(1)
    .max(63)
    .optional()
    .describe('Workspace (name or id) to mount as the sandbox\'s files, made on first use. Absent: a persistent sandbox gets one named after itself; a one-shot run keeps nothing'),
  baseWorkspaceId: z.string().min(1).max(63).optional().describe('Make the workspace as a copy-on-write fork of this one (its latest snapshot)'),
  diskGb: z.number().positive().max(1_000_000).optional().describe('Enforced size of the workspace in GB (2^30 bytes; fractions allowed)'),
};

export const workspaceSyncFields = {
  usedBytes: z.number().int().describe('Bytes the workspace\'s own writes take'),
  limitBytes: z.number().int().nullable().describe('Enforced size (null: none)'),
  lastSyncedAt: z.string().nullable().describe('ISO 8601: when the last snapshot the store acknowledged was taken'),
  pendingBytes: z.number().int().nullable().describe('Bytes changed since (an estimate; null: unknown)'),
  failingSince: z.string().nullable().describe('ISO 8601: set while syncs fail'),
  failure: z.string().nullable().describe('Why the last sync failed, while they fail'),
};

/** A workspace with what it takes and where it stands with the store. */
export const workspaceSchema = z
  .object({
    id: z.string().describe('Stable id, e.g. ws_3k9x…'),
    name: z.string().describe('Unique per owner (the sandbox-name rule)'),
    diskGb: z.number().nullable().describe('Enforced size in GB (2^30 bytes); null: none'),
    baseId: z.string().nullable().describe('The workspace it was forked from'),
    createdAt: z.string(),
    updatedAt: z.string(),
    lastUsedAt: z.string().nullable().describe('When a sandbox last mounted it'),
    usedBy: z
      .object({ id: z.string(), name: z.string(), status: sandboxStatusSchema })
      .nullable()
      .describe('The sandbox that mounts it (live) or will at its next start (stopped)'),
    ...workspaceSyncFields,
  })
  .meta({ id: 'Workspace' });
export type Workspace = z.infer<typeof workspaceSchema>;

export const sandboxSchema = z
  .object({
    id: z.string().describe('Stable id, e.g. sb_3k9x…'),
    name: z.string().describe('Unique per owner; also the hostname inside the sandbox'),
    image: z.string(),
    status: sandboxStatusSchema,
    statusReason: z.string().nullable().describe('Why the sandbox is in its status, when there is more to say'),
    logTrimmedBytes: z
      .number()
      .int()
      .describe('Bytes of its logged output trimmed (oldest first) to keep its owner within the log quota'),
    exitCode: z.number().int().nullable().describe('Exit code of the script of a one-shot run once it ended'),
    persistent: z.boolean().describe('Persistent sandboxes stay after their script ends'),
    cpus: z.number(),
    memoryMb: z.number().int(),
    pidsLimit: z.number().int(),
    openFiles: z.number().int().describe('Limit on open files of each process (RLIMIT_NOFILE)'),
    network: networkModeSchema,
    sshAgentForwarding: z.boolean(),
    defaultUser: z.string().describe('The user SSH logins run as unless the SSH user says box+name'),
    allowNet: z.array(z.string()).describe('Egress allow-list (empty: every public destination)'),
    denyNet: z.array(z.string()).describe('Egress deny-list'),
    workspaceId: z.string().nullable().describe('The workspace it mounts (null: its files go with it)'),
    workspace: workspaceSchema
      .optional()
      .describe('Its workspace, with disk use and sync state (in the answers about one sandbox: status, stop, start)'),
    createdAt: z.string().describe('ISO 8601'),
    updatedAt: z.string().describe('ISO 8601'),
  })
  .meta({ id: 'Sandbox' });
export type Sandbox = z.infer<typeof sandboxSchema>;

export const createSandboxRequestSchema = z
  .object({
    ...sandboxOptions,
    persistent: z.boolean().optional().describe('Default true: the sandbox stays until removed'),
  })
  .meta({ id: 'CreateSandboxRequest' });
export type CreateSandboxRequest = z.infer<typeof createSandboxRequestSchema>;

export const listSandboxesResponseSchema = z
  .object({ sandboxes: z.array(sandboxSchema) })
  .meta({ id: 'SandboxList' });

export const listSandboxesQuerySchema = z.object({
  all: z
    .enum(['true', 'false'])
    .optional()
    .describe('Include sandboxes whose run has ended (completed, error, stopped)'),
});

export const pruneRequestSchema = z
  .object({
    stopped: z.boolean().optional().describe('Also remove stopped sandboxes (default: only ended runs)'),
  })
  .meta({ id: 'PruneRequest' });
export type PruneRequest = z.infer<typeof pruneRequestSchema>;

export const pruneResponseSchema = z
  .object({ removed: z.array(sandboxSchema).describe('What was removed, as it was') })
  .meta({ id: 'PruneResult' });
export type PruneResult = z.infer<typeof pruneResponseSchema>;

export const sandboxRefParamsSchema = z.object({
  ref: z.string().describe('Sandbox id or name'),
});

/**
 * The whole stdin of a command, given in the request (curl, buffered SDK calls; bounded by the
 * body limit). Without it the command reads EOF at once; to stream stdin, use the WebSocket on
 * the same path (stdin and stdin-end frames).
 */
const stdinOptions = {
  stdin: z.string().optional().describe('The whole stdin of the command (then EOF); absent: the command reads EOF at once'),
  stdinEncoding: z.enum(['utf8', 'base64']).optional().describe('How stdin is encoded (default utf8; base64 for binary input)'),
};

export const terminalSchema = z
  .object({
    cols: z.number().int().min(0).max(65535).describe('Columns; 0: unknown'),
    rows: z.number().int().min(0).max(65535).describe('Rows; 0: unknown'),
    term: z.string().regex(/^[\w.+-]{1,64}$/).optional().describe('TERM inside (default xterm-256color)'),
  })
  .meta({ id: 'Terminal' });
export type Terminal = z.infer<typeof terminalSchema>;

/** A resize frame's payload (client to server, WebSocket only). */
export const resizeFrameSchema = z.object({ cols: z.number().int().min(0).max(65535), rows: z.number().int().min(0).max(65535) });

export const execRequestSchema = z
  .object({
    command: z.array(z.string()).min(1).describe('argv; use ["bash","-c", script] for a script'),
    env: envSchema.optional(),
    cwd: z.string().optional().describe('Working directory inside the sandbox (default /root)'),
    timeoutSec: timeoutSecSchema.optional().describe('Kill the command after this many seconds (at most your quota\'s timeoutSec)'),
    ...stdinOptions,
    tty: terminalSchema
      .optional()
      .describe('Run the command under a terminal (roost-pty) of this size; its output then all comes as stdout. Over the WebSocket, resize frames change the size'),
  })
  .meta({ id: 'ExecRequest' });
export type ExecRequest = z.infer<typeof execRequestSchema>;

export const runRequestSchema = z
  .object({
    script: z.string().min(1).describe('Shell script, run with bash -c'),
    ...sandboxOptions,
    persistent: z.boolean().optional().describe('Keep the sandbox after the script ends (default false)'),
    timeoutSec: timeoutSecSchema.optional().describe('Kill the script after this many seconds (at most your quota\'s timeoutSec)'),
    ...stdinOptions,
  })
  .meta({ id: 'RunRequest' });
export type RunRequest = z.infer<typeof runRequestSchema>;

export const logsQuerySchema = z.object({
  follow: z.enum(['true', 'false']).optional().describe('Keep streaming until the sandbox\'s script ends'),
});

export const whoamiResponseSchema = z
  .object({ user: z.object({ id: z.string(), name: z.string(), isAdmin: z.boolean() }) })
  .meta({ id: 'Whoami' });
export type Whoami = z.infer<typeof whoamiResponseSchema>;

export const healthSchema = z
  .object({
    status: z.literal('ok'),
    version: z.string(),
    runtime: z.string().describe('Engine that runs sandboxes, e.g. crun 1.8.1'),
    adminTokenFile: z
      .string()
      .optional()
      .describe('Where the admin token is; only told to clients on the daemon host'),
    dataDir: z
      .string()
      .optional()
      .describe('The daemon\'s data dir, an absolute path (the admin token file is in it); only told to clients on the daemon host'),
  })
  .meta({ id: 'Health' });
export type Health = z.infer<typeof healthSchema>;

export const errorBodySchema = z
  .object({
    error: z.object({
      code: z.string(),
      message: z.string(),
      hint: z.string(),
      requestId: z.string().optional(),
    }),
  })
  .meta({ id: 'Error' });

/** Final frame of an exec or run stream. */
export const exitFrameSchema = z.object({
  exitCode: z.number().int(),
  signal: z.string().optional(),
  /** Set when Roost ended the process, e.g. "timed out after 5 s". */
  reason: z.string().optional(),
});
export type ExitFrame = z.infer<typeof exitFrameSchema>;

/** The most of stdout, and of stderr, that an answer in JSON holds unless the daemon's config says otherwise. */
export const defaultMaxJsonOutputBytes = 16 * 1024 * 1024;

const outputEncodingSchema = z
  .enum(['utf8', 'base64'])
  .describe('utf8: the output is valid UTF-8 and given as text; base64: it is not, and its bytes are given in base64');

/** exec, run and logs answered in JSON (Accept: application/json), once the process has ended. */
export const execResultSchema = z
  .object({
    exitCode: z.number().int(),
    signal: z.string().optional().describe('The signal that ended the process, e.g. SIGKILL'),
    reason: z.string().optional().describe('Set when Roost ended the process, e.g. "timed out after 5 s"'),
    stdout: z.string(),
    stderr: z.string(),
    stdoutEncoding: outputEncodingSchema,
    stderrEncoding: outputEncodingSchema,
    truncated: z
      .boolean()
      .describe(
        `True when stdout or stderr was longer than the daemon keeps for one answer (http.maxJsonOutputBytes, ${defaultMaxJsonOutputBytes / 1024 / 1024} MiB each by default): the rest was read and dropped, the process was not stopped. Use the stream (application/vnd.roost.stream) for all of it.`,
      ),
  })
  .meta({ id: 'ExecResult' });
export type ExecResult = z.infer<typeof execResultSchema>;

export const runResultSchema = execResultSchema
  .extend({ sandbox: sandboxSchema })
  .describe('ExecResult and the sandbox as it is after the run')
  .meta({ id: 'RunResult' });
export type RunResult = z.infer<typeof runResultSchema>;

export const doctorResponseSchema = z
  .object({
    runtime: z.string(),
    problems: z.array(z.object({ problem: z.string(), fix: z.string() })).describe('Missing host prerequisites'),
    leftovers: z
      .array(z.object({ sandboxId: z.string(), what: z.string() }))
      .describe('Residue no live sandbox accounts for, and store/runtime disagreements'),
  })
  .meta({ id: 'Doctor' });
export type DoctorReport = z.infer<typeof doctorResponseSchema>;

export const sshKeySchema = z
  .object({
    id: z.string(),
    name: z.string().describe('A label: the key\'s comment unless given'),
    type: z.string().describe('e.g. ssh-ed25519'),
    fingerprint: z.string().describe('SHA256:…, as `ssh-keygen -l` prints it'),
    createdAt: z.string(),
    lastUsedAt: z.string().nullable(),
  })
  .meta({ id: 'SshKey' });
export type SshKey = z.infer<typeof sshKeySchema>;

export const addSshKeyRequestSchema = z
  .object({
    publicKey: z.string().min(1).max(16_384).describe('One line of authorized_keys / id_*.pub: TYPE BASE64 [COMMENT]'),
    name: z.string().min(1).max(100).optional().describe('Default: the key\'s comment, else its type'),
  })
  .meta({ id: 'AddSshKeyRequest' });
export type AddSshKeyRequest = z.infer<typeof addSshKeyRequestSchema>;

export const addSshKeyResponseSchema = sshKeySchema
  .extend({
    alreadyRegistered: z
      .boolean()
      .describe('true: you had registered this key before; nothing changed (the name given now is not applied)'),
  })
  .meta({ id: 'AddedSshKey' });
export type AddedSshKey = z.infer<typeof addSshKeyResponseSchema>;

export const listSshKeysResponseSchema = z.object({ keys: z.array(sshKeySchema) }).meta({ id: 'SshKeyList' });

export const sshKeyRefParamsSchema = z.object({
  ref: z.string().describe('Key id, name or SHA256 fingerprint'),
});

export const sshInfoSchema = z
  .object({
    host: z.string().describe('The address the SSH gateway listens on (0.0.0.0 or :: means any of the host\'s)'),
    port: z.number().int(),
    hostKeys: z.array(z.string()).describe('The gateway\'s public host keys, "TYPE BASE64"; they never change'),
  })
  .meta({ id: 'SshInfo' });
export type SshInfo = z.infer<typeof sshInfoSchema>;

export const updateSandboxRequestSchema = z
  .object({
    sshAgentForwarding: z.boolean().optional().describe('Let SSH sessions forward the client\'s agent into it (ssh -A)'),
    defaultUser: unixUserSchema.optional().describe('The user SSH logins run as unless the SSH user says box+name'),
    allowNet: netRulesSchema.optional().describe('Replaces the egress allow-list; takes effect at once on a running sandbox'),
    denyNet: netRulesSchema.optional().describe('Replaces the egress deny-list; takes effect at once on a running sandbox'),
    clearNet: z.boolean().optional().describe('Drop every egress rule first (allowNet/denyNet, if given, then apply)'),
    cpus: sandboxOptions.cpus.describe('New CPU limit; a running sandbox gets it at once'),
    memoryMb: sandboxOptions.memoryMb.describe('New memory limit in MB; a running sandbox gets it at once (below what it uses now, the kernel refuses it on cgroup v1 and reclaims, or OOM-kills, on v2)'),
    pids: sandboxOptions.pids.describe('New limit on processes and threads; a running sandbox gets it at once'),
    openFiles: sandboxOptions.openFiles.describe(
      'New open-files limit: processes started afterwards (exec, ssh) get it; running processes keep theirs',
    ),
  })
  .meta({ id: 'UpdateSandboxRequest' });
export type UpdateSandboxRequest = z.infer<typeof updateSandboxRequestSchema>;

/** Each limit of a quota, with its unit; also the keys of a change. */
const quotaLimitFields = {
  sandboxes: z.number().int().min(0).max(1_000_000).describe('Live sandboxes (pending, running, sleeping) at once'),
  cpus: z.number().min(0).max(1_000_000).describe('CPUs, summed over live sandboxes'),
  memoryMb: z.number().int().min(0).max(1024 * 1024 * 1024).describe('Memory in MB, summed over live sandboxes'),
  pids: z.number().int().min(0).max(1_000_000_000).describe('Processes and threads, summed over live sandboxes'),
  timeoutSec: z
    .number()
    .int()
    .min(1)
    .max(maxTimeoutSec, `at most ${maxTimeoutSec} s (about 24.8 days): the longest a timer can wait`)
    .describe('The longest timeout a run or exec may ask, in seconds'),
  logBytes: z
    .number()
    .int()
    .min(0)
    .max(Number.MAX_SAFE_INTEGER)
    .describe('Logged output of runs kept for `roost logs`; past it the oldest is trimmed'),
};

export const quotaLimitsSchema = z.object(quotaLimitFields).meta({ id: 'QuotaLimits' });
export type QuotaLimits = z.infer<typeof quotaLimitsSchema>;

export const quotaSchema = z
  .object({
    user: z.object({ id: z.string(), name: z.string() }),
    limits: quotaLimitsSchema.describe("What applies: the admin's override where there is one, else the daemon's default"),
    overrides: quotaLimitsSchema.partial().describe('What an admin set for this user; the rest follows the defaults'),
    usage: z
      .object({
        sandboxes: z.number().int(),
        cpus: z.number(),
        memoryMb: z.number().int(),
        pids: z.number().int(),
        logBytes: z.number().int(),
      })
      .describe('What the user holds now: live sandboxes and the sums of their limits, and stored log bytes'),
    workspaces: z
      .object({
        count: z.number().int(),
        diskBytes: z.number().int().describe('Sum of the sizes (--disk) of the user\'s workspaces'),
        maxCount: z.number().int(),
        maxDiskBytes: z.number().int(),
      })
      .optional()
      .describe('Workspaces held and their limits (the daemon\'s, the same for every user); absent on a daemon without workspaces'),
  })
  .meta({ id: 'Quota' });
export type Quota = z.infer<typeof quotaSchema>;

export const updateQuotaRequestSchema = z
  .object(Object.fromEntries(Object.entries(quotaLimitFields).map(([key, field]) => [key, field.nullable().optional()])) as {
    [K in keyof typeof quotaLimitFields]: z.ZodOptional<z.ZodNullable<(typeof quotaLimitFields)[K]>>;
  })
  .strict()
  .describe('Limits to set for the user; null returns one to the daemon\'s default; absent ones stay as they are')
  .meta({ id: 'UpdateQuotaRequest' });
export type UpdateQuotaRequest = z.infer<typeof updateQuotaRequestSchema>;

export const userRefParamsSchema = z.object({
  user: z.string().min(1).max(200).describe('User name or id'),
});

export const listWorkspacesResponseSchema = z.object({ workspaces: z.array(workspaceSchema) }).meta({ id: 'WorkspaceList' });

export const workspaceRefParamsSchema = z.object({
  ref: z.string().describe('Workspace id or name'),
});

export const forkWorkspaceRequestSchema = z
  .object({
    name: z.string().min(1).max(63).describe('Name of the new workspace'),
    diskGb: z.number().positive().max(1_000_000).optional().describe('Its size in GB (default: the size of the one forked)'),
  })
  .meta({ id: 'ForkWorkspaceRequest' });
export type ForkWorkspaceRequest = z.infer<typeof forkWorkspaceRequestSchema>;

export const workspaceSnapshotSchema = z
  .object({
    id: z.string(),
    takenAt: z.string().describe('ISO 8601'),
    bytes: z.number().int().describe('Bytes of the workspace\'s own layer then'),
    files: z.number().int(),
  })
  .meta({ id: 'WorkspaceSnapshot' });
export type WorkspaceSnapshot = z.infer<typeof workspaceSnapshotSchema>;

export const listSnapshotsResponseSchema = z
  .object({ workspace: workspaceSchema, snapshots: z.array(workspaceSnapshotSchema).describe('Oldest first') })
  .meta({ id: 'WorkspaceSnapshotList' });

export const restoreWorkspaceRequestSchema = z
  .object({ snapshot: z.string().min(1).describe('Snapshot id (from the snapshots list)') })
  .meta({ id: 'RestoreWorkspaceRequest' });

export const resizeSandboxRequestSchema = z
  .object({ diskGb: z.number().positive().max(1_000_000).nullable().describe('New size of the sandbox\'s workspace in GB (2^30 bytes); null: no limit') })
  .meta({ id: 'ResizeSandboxRequest' });
export type ResizeSandboxRequest = z.infer<typeof resizeSandboxRequestSchema>;

export const syncSandboxResponseSchema = z
  .object({ sandbox: sandboxSchema, snapshot: workspaceSnapshotSchema.describe('What the store now has') })
  .meta({ id: 'SyncResult' });
export type SyncResult = z.infer<typeof syncSandboxResponseSchema>;

/** Bytes of a size given in GB (2^30 bytes, as `--disk` and `diskGb` mean it). */
export const bytesPerGb = 2 ** 30;
