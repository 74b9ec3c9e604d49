#!/usr/bin/env node
// `roostd`: the daemon in the foreground. JSON log lines go to stdout; the start-up summary for
// humans goes to stderr, so the log stays machine-readable.
import { loadConfig, splitAddr } from './config.js';
import { AddressInUseError, buildDaemon } from './daemon.js';
import { version } from './version.js';

const help = `roostd — the Roost daemon (HTTP API, sandbox runtime)

Usage: roostd [--help] [--version]

Runs in the foreground until Ctrl-C (SIGINT) or SIGTERM. Configuration, each overridable:
  ROOST_CONFIG_FILE       JSON config file (default /etc/roost/roostd.json, if present)
  ROOST_DATA_DIR          state, sandboxes, admin token (default /var/lib/roost)
  ROOST_HTTP_ADDR         HTTP API address (default 127.0.0.1:7070)
  ROOST_SSH_ADDR          SSH gateway address (default 127.0.0.1:2222)
  ROOST_IMAGE_CACHE_DIR   built images (default /var/cache/roost/images)
  ROOST_RUNTIME           auto | crun | runc (default auto: crun when it works here)
  ROOST_LOG_LEVEL         trace | debug | info | warn | error (default info)
  ROOST_NETWORK           none | nat: a sandbox's network when it does not ask (default none)
  ROOST_ALLOW_NAT         true | false: whether sandboxes may have egress at all (default true)
  ROOST_DNS_SERVERS       upstream resolvers for NAT sandboxes, HOST[:PORT],… (default: /etc/resolv.conf)
  ROOST_EGRESS_ALLOW_CIDRS non-public IPv4 ranges NAT sandboxes may reach anyway, comma-separated (default none)
  ROOST_INSTANCE          which roostd on this host: scopes bridge, subnet, nft table, cgroups (default: from the data dir)
  ROOST_SUBNET            this instance's sandbox subnet (default 10.213.0.0/16 for the default instance, else a free /20)
  ROOST_POOL_SIZE         ready sandboxes kept per pooled image, 0 = off (default 4)
  ROOST_POOL_IMAGES       images with a warm pool, comma-separated (default debian)

Every user's quota (the admin's too) unless an admin sets another (roost quota set):
  ROOST_QUOTA_SANDBOXES   live sandboxes at once (default 20)
  ROOST_QUOTA_CPUS        CPUs summed over a user's live sandboxes (default 32)
  ROOST_QUOTA_MEMORY_MB   memory in MB summed over them (default 32768)
  ROOST_QUOTA_PIDS        processes and threads summed over them (default 32768)
  ROOST_QUOTA_TIMEOUT_SEC the longest timeout a run or exec may ask (default 86400, at most 2147483)
  ROOST_QUOTA_LOG_BYTES   run output kept per user; the oldest is trimmed past it (default 268435456)

Ended runs each user keeps (roost prune removes them at once); past either, the oldest go:
  ROOST_RUN_RETENTION_COUNT  ended runs kept per user (default 500)
  ROOST_RUN_RETENTION_BYTES  bytes of their logs kept per user (default 134217728; the newest run always stays)

Workspaces (docs/workspaces.md):
  ROOST_WORKSPACE_SYNC_INTERVAL_MS  how often a running sandbox's workspace syncs (default 30000; 0: only at stop and roost sync)
  ROOST_WORKSPACE_POOL_BYTES        size of the btrfs pool file <data dir>/workspaces.btrfs, when it is made (default 21474836480)
  ROOST_WORKSPACE_KEEP_SNAPSHOTS    local snapshots kept per workspace (default 5)

Logs are JSON lines on stdout. See docs/operations.md for what roostd changes on the host.`;

async function main(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${help}\n`);
    return 0;
  }
  if (argv.includes('--version')) {
    process.stdout.write(`roostd ${version}\n`);
    return 0;
  }
  if (argv.length > 0) {
    process.stderr.write(`roostd: unknown argument ${argv[0]}\n\n${help}\n`);
    return 2;
  }
  const config = loadConfig(process.env);
  const daemon = await buildDaemon(config);
  // The last line of defence, not the first: listeners catch their own errors. A promise nobody
  // awaited that rejects is a bug to log, not a reason to drop every user's connections (Node's
  // default would exit). Tests run the daemon without this, so such bugs still fail them.
  process.on('unhandledRejection', (reason) => {
    daemon.logger.error({ err: reason }, 'unhandled promise rejection (a bug in roostd; it keeps running)');
  });
  let httpUrl: string;
  let sshPort: number;
  try {
    ({ httpUrl, sshPort } = await daemon.listen());
  } catch (error) {
    await daemon.close();
    if (error instanceof AddressInUseError) {
      throw new Error(`${error.addr} is already in use: is another roostd running? Set ${error.variable} to use another address.`);
    }
    throw error;
  }
  const sshHost = splitAddr(config.sshAddr).host;
  process.stderr.write(
    [
      '',
      `roostd ${version} is running (${daemon.runtimeName})`,
      `  API        ${httpUrl}/api/v1   (OpenAPI: ${httpUrl}/api/openapi.json)`,
      `  SSH        ssh -p ${sshPort} <sandbox>@${sshHost}   (after roost ssh-key add)`,
      `  data dir   ${config.dataDir}`,
      `  admin token ${daemon.adminTokenFile}  (roost login finds it by itself on this host)`,
      '',
      'Try, in another terminal:',
      `  npx roost login${httpUrl === 'http://127.0.0.1:7070' ? '' : ` --url ${httpUrl}`} && npx roost run 'echo Hello World'`,
      '',
      'Ctrl-C stops roostd.',
      '',
    ].join('\n'),
  );
  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      // A second Ctrl-C (npm passes signals on too) must not kill us halfway through stopping.
      if (stopping) return;
      stopping = true;
      process.stderr.write(`\nroostd: ${signal} received, stopping…\n`);
      resolve();
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
  });
  await daemon.close();
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`roostd: ${message}\n`);
    process.exit(1);
  },
);
