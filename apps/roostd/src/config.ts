// The daemon's configuration, read once at the edge: defaults < config file < environment.
// Nothing else in Roost reads process.env.
import { s3ConfigFromEnv, type S3StoreConfig } from '@roost/workspaces-s3';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { maxTimeoutSec, maxTimerDelayMs } from '@roost/core';
import { defaultMaxJsonOutputBytes } from '@roost/contract';

/** setTimeout and setInterval hold at most 2^31-1 ms; a longer delay would fire at once. */
const timerDelayMsSchema = z.number().int().max(maxTimerDelayMs, `at most ${maxTimerDelayMs} ms (about 24.8 days), the longest a timer can wait`);

const addrSchema = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/, 'an address is HOST:PORT, e.g. 127.0.0.1:7070');

const ipv4CidrSchema = z.string().regex(/^(\d{1,3}\.){3}\d{1,3}(\/\d{1,2})?$/, 'an IPv4 range is ADDRESS/BITS, e.g. 10.214.0.0/20');

export const configSchema = z.object({
  dataDir: z.string().min(1),
  /**
   * Which roostd on this host: scopes its bridge, subnet, nft table, cgroup parent and veths.
   * Unset: `default` (the names of roostd before instances) for the default data dir, else one
   * derived from the data dir, kept in it once chosen.
   */
  instance: z.string().regex(/^(default|[a-z0-9]{1,8})$/, 'an instance name is "default" or up to 8 lowercase letters and digits').optional(),
  httpAddr: addrSchema,
  sshAddr: addrSchema,
  imageCacheDir: z.string().min(1),
  runtime: z.enum(['auto', 'crun', 'runc']),
  logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']),
  defaults: z.object({
    cpus: z.number().positive(),
    memoryMb: z.number().int().min(16),
    pids: z.number().int().min(8),
    openFiles: z.number().int().min(64).max(1_048_576),
  }),
  network: z.object({
    /** What a sandbox gets when it does not ask: none (no egress) or nat. */
    default: z.enum(['none', 'nat']),
    /** Whether a sandbox may ask for nat at all; off keeps ip_forward and NAT untouched. */
    allowNat: z.boolean(),
    /** Upstream resolvers of the DNS forwarder NAT sandboxes use (HOST or HOST:PORT); empty: /etc/resolv.conf. */
    dnsServers: z.array(z.string()),
    /** Sandbox subnet of this instance; unset: 10.213.0.0/16 for the default instance, else a free /20 of 10.214–10.223. */
    subnet: ipv4CidrSchema.optional(),
    /** Non-public IPv4 ranges NAT sandboxes may reach anyway (RFC 1918, link-local, … are blocked otherwise). */
    egressAllowCidrs: z.array(ipv4CidrSchema),
  }),
  ssh: z.object({
    /** How often the gateway pings a client, and how many unanswered pings drop it. */
    keepaliveIntervalMs: timerDelayMsSchema.min(100),
    keepaliveCountMax: z.number().int().min(1),
    /** A connection that has not logged in this long after its first byte is cut. */
    loginTimeoutMs: z.number().int().min(100).max(600_000),
    /** Connections not logged in yet, per source (IPv4 address, IPv6 /64) and in all. */
    maxUnauthenticatedPerSource: z.number().int().min(1),
    maxUnauthenticated: z.number().int().min(1),
    /** Failed logins per source within failureWindowMs before the source is refused. */
    maxFailures: z.number().int().min(1),
    failureWindowMs: z.number().int().min(1000),
    /** Refused login attempts on one connection before it is closed. */
    maxAuthTries: z.number().int().min(1),
    /** Channels open at once per connection; -R listeners per connection; env variables per session. */
    maxChannelsPerConnection: z.number().int().min(1),
    maxRemoteForwards: z.number().int().min(0),
    maxEnvPerSession: z.number().int().min(0),
  }),
  /** Every user's limits unless an admin set an override for them (`roost quota set`). */
  quota: z.object({
    /** Live sandboxes (pending, running, sleeping) at once. */
    sandboxes: z.number().int().min(0),
    /** Sums over a user's live sandboxes. */
    cpus: z.number().min(0),
    memoryMb: z.number().int().min(0),
    pids: z.number().int().min(0),
    /** The longest timeout a run or exec may ask. */
    timeoutSec: z.number().int().min(1).max(maxTimeoutSec, `at most ${maxTimeoutSec} s (about 24.8 days), the longest a timer can wait`),
    /** Logged output of a user's runs kept; past it the oldest is trimmed. */
    logBytes: z.number().int().min(0),
  }),
  /**
   * Ended runs (and failed creates) each user keeps, and bytes of their logs; past either the
   * oldest are removed with their logs (the newest always stays). `roost prune` removes them all.
   */
  runRetention: z.object({
    count: z.number().int().min(1),
    bytes: z.number().int().min(0),
  }),
  /** What one HTTP client may make the daemon hold (docs/operations.md, "HTTP limits"). */
  http: z.object({
    headersTimeoutMs: z.number().int().min(100),
    requestTimeoutMs: z.number().int().min(100),
    keepAliveTimeoutMs: z.number().int().min(100),
    maxHeaderBytes: z.number().int().min(1024).max(1_048_576),
    bodyLimitBytes: z.number().int().min(1024),
    maxConnections: z.number().int().min(1),
    maxConnectionsPerSource: z.number().int().min(1),
    maxWebSocketMessageBytes: z.number().int().min(1024),
    // At most 32 MiB: JSON escapes may make a byte 6 characters, and two such outputs must stay
    // below the longest string V8 makes (2^29 characters).
    maxJsonOutputBytes: z.number().int().min(1024).max(32 * 1024 * 1024),
  }).refine((http) => http.headersTimeoutMs <= http.requestTimeoutMs, 'http.headersTimeoutMs must not exceed http.requestTimeoutMs'),
  /** Views of /proc for sandboxes (free, top, uptime show the sandbox's limits): docs/runtime-oci.md. */
  lxcfs: z.object({
    /** auto: the host's lxcfs at hostDir when mounted, else roostd starts its own; off: sandboxes see the host's /proc. */
    mode: z.enum(['auto', 'off']),
    /** The lxcfs roostd starts when the host runs none. */
    binary: z.string().min(1),
    /** Where a host's own lxcfs is mounted (Debian's lxcfs service). */
    hostDir: z.string().min(1),
  }),
  /** Files copied in (`roost cp`, PUT …/files) and uploaded for runs (`run -f`, POST /api/v1/files). */
  files: z.object({
    /** The most bytes one archive or uploaded file may have (UPLOAD_TOO_LARGE past it). */
    maxUploadBytes: z.number().int().min(1024),
    /** How long an uploaded file is kept for runs to use. */
    retentionSec: z.number().int().min(60),
    /** Uploaded bytes one user may have stored at once. */
    maxStoredBytesPerUser: z.number().int().min(1024),
  }),
  /** The workspace store (S3), from ROOST_S3_URL, ROOST_S3_BUCKET, AWS_* (s3ConfigFromEnv,
   *  docs/workspaces.md); null: workspaces stay on this host's disk only. Never logged: it holds
   *  the secret key. */
  workspaceStore: z.custom<S3StoreConfig>((value) => typeof value === 'object').nullable(),
  /** Workspaces (docs/workspaces.md). */
  workspaces: z.object({
    /** How often a running sandbox's workspace is synced (also on stop and `roost sync`); 0: only then. */
    syncIntervalMs: z.number().int().min(0),
    /** Workspaces one user may have, and the sum of their `--disk` sizes (a quota like `quota`'s, the same for every user). */
    perUser: z.number().int().min(0),
    diskBytesPerUser: z.number().int().min(0),
    /** Size of the btrfs pool file <dataDir>/workspaces.btrfs when roostd makes it (preallocated; docs/operations.md, "The workspace pool"). */
    poolBytes: z.number().int().min(256 * 1024 * 1024, 'at least 256 MiB (268435456)'),
    /** Local snapshots kept per workspace (roost workspace snapshots); older ones are deleted after each sync. */
    keepSnapshots: z.number().int().min(1).max(1000),
  }),
  pool: z.object({
    /** Ready sandboxes kept per image in `images`. 0 turns the pool off. */
    size: z.number().int().min(0).max(1000),
    images: z.array(z.string().min(1)),
    /** Most of the host's memory the pool may reserve, counted at each member's memory limit. */
    memoryShare: z.number().min(0).max(1),
  }),
});
export type DaemonConfig = z.infer<typeof configSchema>;

export const defaultConfigFile = '/etc/roost/roostd.json';
export const defaultDataDir = '/var/lib/roost';

const defaults: DaemonConfig = {
  dataDir: defaultDataDir,
  httpAddr: '127.0.0.1:7070',
  sshAddr: '127.0.0.1:2222',
  imageCacheDir: '/var/cache/roost/images',
  runtime: 'auto',
  logLevel: 'info',
  defaults: { cpus: 1, memoryMb: 1024, pids: 1024, openFiles: 65_536 },
  network: { default: 'none', allowNat: true, dnsServers: [], egressAllowCidrs: [] },
  // 20 sandboxes at the default limits fit in every total, so the count is what binds first.
  quota: { sandboxes: 20, cpus: 32, memoryMb: 32_768, pids: 32_768, timeoutSec: 86_400, logBytes: 256 * 1024 * 1024 },
  pool: { size: 4, images: ['debian'], memoryShare: 0.25 },
  files: { maxUploadBytes: 1024 * 1024 * 1024, retentionSec: 86_400, maxStoredBytesPerUser: 2 * 1024 * 1024 * 1024 },
  runRetention: { count: 500, bytes: 128 * 1024 * 1024 },
  workspaceStore: null,
  workspaces: { syncIntervalMs: 30_000, perUser: 200, diskBytesPerUser: 10 * 1024 ** 4, poolBytes: 20 * 1024 ** 3, keepSnapshots: 5 },
  lxcfs: { mode: 'auto', binary: '/usr/bin/lxcfs', hostDir: '/var/lib/lxcfs' },
  http: {
    headersTimeoutMs: 20_000,
    requestTimeoutMs: 120_000,
    keepAliveTimeoutMs: 5_000,
    maxHeaderBytes: 16 * 1024,
    bodyLimitBytes: 8 * 1024 * 1024,
    maxConnections: 4096,
    maxConnectionsPerSource: 1024,
    maxWebSocketMessageBytes: 1024 * 1024,
    maxJsonOutputBytes: defaultMaxJsonOutputBytes,
  },
  ssh: {
    keepaliveIntervalMs: 15_000,
    keepaliveCountMax: 4,
    loginTimeoutMs: 20_000,
    maxUnauthenticatedPerSource: 32,
    maxUnauthenticated: 512,
    maxFailures: 20,
    failureWindowMs: 60_000,
    maxAuthTries: 10,
    maxChannelsPerConnection: 256,
    maxRemoteForwards: 32,
    maxEnvPerSession: 32,
  },
};

const envKeys = {
  ROOST_DATA_DIR: 'dataDir',
  ROOST_HTTP_ADDR: 'httpAddr',
  ROOST_SSH_ADDR: 'sshAddr',
  ROOST_IMAGE_CACHE_DIR: 'imageCacheDir',
  ROOST_RUNTIME: 'runtime',
  ROOST_LOG_LEVEL: 'logLevel',
  ROOST_INSTANCE: 'instance',
} as const;

const integer = (v: string) => (/^\d+$/.test(v) ? Number(v) : v);
const decimal = (v: string) => (/^\d+(\.\d+)?$/.test(v) ? Number(v) : v);

/** Variables of nested settings, each with how its text becomes a value. */
const nestedEnvKeys = {
  ROOST_NETWORK: ['network', 'default', (v: string) => v],
  ROOST_ALLOW_NAT: ['network', 'allowNat', (v: string) => (v === 'true' ? true : v === 'false' ? false : v)],
  ROOST_DNS_SERVERS: ['network', 'dnsServers', (v: string) => v.split(',').map((s) => s.trim()).filter(Boolean)],
  ROOST_SUBNET: ['network', 'subnet', (v: string) => v],
  ROOST_EGRESS_ALLOW_CIDRS: ['network', 'egressAllowCidrs', (v: string) => v.split(',').map((s) => s.trim()).filter(Boolean)],
  ROOST_POOL_SIZE: ['pool', 'size', integer],
  ROOST_MAX_UPLOAD_BYTES: ['files', 'maxUploadBytes', integer],
  ROOST_POOL_IMAGES: ['pool', 'images', (v: string) => v.split(',').map((s) => s.trim()).filter(Boolean)],
  ROOST_QUOTA_SANDBOXES: ['quota', 'sandboxes', integer],
  ROOST_QUOTA_CPUS: ['quota', 'cpus', decimal],
  ROOST_QUOTA_MEMORY_MB: ['quota', 'memoryMb', integer],
  ROOST_QUOTA_PIDS: ['quota', 'pids', integer],
  ROOST_QUOTA_TIMEOUT_SEC: ['quota', 'timeoutSec', integer],
  ROOST_QUOTA_LOG_BYTES: ['quota', 'logBytes', integer],
  ROOST_RUN_RETENTION_COUNT: ['runRetention', 'count', integer],
  ROOST_RUN_RETENTION_BYTES: ['runRetention', 'bytes', integer],
  ROOST_WORKSPACE_SYNC_INTERVAL_MS: ['workspaces', 'syncIntervalMs', integer],
  ROOST_WORKSPACE_POOL_BYTES: ['workspaces', 'poolBytes', integer],
  ROOST_WORKSPACE_KEEP_SNAPSHOTS: ['workspaces', 'keepSnapshots', integer],
} as const;

/**
 * Reads the config file (ROOST_CONFIG_FILE, else /etc/roost/roostd.json when present) and the
 * ROOST_* variables. Throws one message listing every problem.
 */
/** What a caller (a test, the CLI of roostd) sets on top of file and environment. */
export type ConfigOverrides = Partial<Omit<DaemonConfig, 'defaults' | 'network' | 'pool' | 'ssh' | 'http' | 'quota' | 'runRetention' | 'lxcfs' | 'workspaces' | 'files'>> & {
  workspaces?: Partial<DaemonConfig['workspaces']>;
  lxcfs?: Partial<DaemonConfig['lxcfs']>;
  files?: Partial<DaemonConfig['files']>;
  http?: Partial<DaemonConfig['http']>;
  runRetention?: Partial<DaemonConfig['runRetention']>;
  quota?: Partial<DaemonConfig['quota']>;
  defaults?: Partial<DaemonConfig['defaults']>;
  network?: Partial<DaemonConfig['network']>;
  pool?: Partial<DaemonConfig['pool']>;
  ssh?: Partial<DaemonConfig['ssh']>;
};

export function loadConfig(env: NodeJS.ProcessEnv, overrides: ConfigOverrides = {}): DaemonConfig {
  const file = env.ROOST_CONFIG_FILE ?? defaultConfigFile;
  let fromFile: Partial<DaemonConfig> = {};
  try {
    fromFile = JSON.parse(readFileSync(file, 'utf8')) as Partial<DaemonConfig>;
  } catch (error) {
    const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
    if (!missing || env.ROOST_CONFIG_FILE) throw new Error(`cannot read config file ${file}: ${(error as Error).message}`);
  }
  const fromEnv: Record<string, string> = {};
  for (const [key, field] of Object.entries(envKeys)) {
    if (env[key]) fromEnv[field] = env[key];
  }
  const nested: Record<string, Record<string, unknown>> = {};
  for (const [key, [group, field, parse]] of Object.entries(nestedEnvKeys)) {
    if (env[key]) (nested[group] ??= {})[field] = parse(env[key]);
  }
  const merged = {
    ...defaults,
    ...fromFile,
    ...fromEnv,
    ...overrides,
    defaults: { ...defaults.defaults, ...fromFile.defaults, ...overrides.defaults },
    network: { ...defaults.network, ...fromFile.network, ...nested.network, ...overrides.network },
    pool: { ...defaults.pool, ...fromFile.pool, ...nested.pool, ...overrides.pool },
    quota: { ...defaults.quota, ...fromFile.quota, ...nested.quota, ...overrides.quota },
    runRetention: { ...defaults.runRetention, ...fromFile.runRetention, ...nested.runRetention, ...overrides.runRetention },
    ssh: { ...defaults.ssh, ...fromFile.ssh, ...overrides.ssh },
    http: { ...defaults.http, ...fromFile.http, ...overrides.http },
    lxcfs: { ...defaults.lxcfs, ...fromFile.lxcfs, ...overrides.lxcfs },
    files: { ...defaults.files, ...fromFile.files, ...nested.files, ...overrides.files },
    workspaces: { ...defaults.workspaces, ...fromFile.workspaces, ...nested.workspaces, ...overrides.workspaces },
    workspaceStore: overrides.workspaceStore !== undefined ? overrides.workspaceStore : s3ConfigFromEnv(env),
  };
  const result = configSchema.safeParse(merged);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`).join('; ');
    throw new Error(`invalid configuration: ${problems}`);
  }
  return result.data;
}

export function splitAddr(addr: string): { host: string; port: number } {
  const index = addr.lastIndexOf(':');
  return { host: addr.slice(0, index).replace(/^\[|\]$/g, ''), port: Number(addr.slice(index + 1)) };
}
