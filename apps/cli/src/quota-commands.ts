// `roost quota`: your limits and use; `roost quota set` for admins.
import type { Command } from 'commander';
import type { Quota, UpdateQuotaRequest } from '@roost/sdk';
import { client, withJson, type JsonOpt } from './connection.js';
import type { CliEnv } from './credentials.js';
import { formatBytes, printJson, printLine, table, UsageError } from './output.js';

/** A limit's value, or "default" (commander keeps the text when a parser returns null). */
function limitValue(flag: string, opts: { integer: boolean; suffixes?: boolean }) {
  return (text: string): number | 'default' => {
    if (text === 'default') return 'default';
    const match = /^(\d+(?:\.\d+)?)([KMG]i?B?)?$/i.exec(text);
    const unit = match?.[2]?.[0]?.toUpperCase();
    if (!match || (unit && !opts.suffixes)) {
      throw new UsageError(`${flag} expects ${opts.integer ? 'a whole number' : 'a number'}${opts.suffixes ? ' (with K, M or G for KiB, MiB, GiB)' : ''} or "default", got "${text}"`);
    }
    const value = Number(match[1]) * (unit ? 1024 ** ('KMG'.indexOf(unit) + 1) : 1);
    if (opts.integer && !Number.isInteger(value)) throw new UsageError(`${flag} expects a whole number, got "${text}"`);
    return value;
  };
}

export function addQuotaCommands(program: Command, cli: CliEnv): void {
  const quota = withJson(
    program
      .command('quota')
      .description('your limits and what you use now (admins: anyone\'s, and `quota set`)')
      .argument('[user]', 'another user\'s (admins only)')
      .addHelpText(
        'after',
        '\nLive sandboxes (pending, running, sleeping) count with the CPUs, memory and pids they were\nmade with. Past a limit the daemon answers QUOTA_EXCEEDED, naming the limit and your use.\n\nExamples:\n  roost quota\n  roost quota bob                                    # admins\n  roost quota set bob --sandboxes 50 --memory 65536  # admins',
      ),
  ).action(async (user: string | undefined, opts: JsonOpt) => {
    const roost = await client(cli);
    const view = user ? await roost.quotas.get(user) : await roost.quotas.mine();
    if (opts.json) printJson(view);
    else printLine(describeQuota(view));
  });

  withJson(
    quota
      .command('set')
      .description('set a user\'s limits (admins; the admin\'s own too); "default" returns one to the daemon\'s default')
      .argument('<user>', 'user name or id')
      .option('--sandboxes <n>', 'live sandboxes at once', limitValue('--sandboxes', { integer: true }))
      .option('--cpus <n>', 'CPUs summed over live sandboxes', limitValue('--cpus', { integer: false }))
      .option('--memory <MB>', 'memory in MB summed over live sandboxes', limitValue('--memory', { integer: true }))
      .option('--pids <n>', 'processes and threads summed over live sandboxes', limitValue('--pids', { integer: true }))
      .option('--timeout <seconds>', 'the longest timeout a run or exec may ask', limitValue('--timeout', { integer: true }))
      .option('--log-bytes <bytes>', 'run output kept for `roost logs` (K, M, G suffixes); past it the oldest is trimmed', limitValue('--log-bytes', { integer: true, suffixes: true }))
      .addHelpText('after', '\nExamples:\n  roost quota set bob --sandboxes 50 --cpus 16 --memory 65536\n  roost quota set admin --log-bytes 1G\n  roost quota set bob --memory default         # back to the daemon\'s default'),
  ).action(async (user: string, opts: Record<string, number | 'default' | undefined> & JsonOpt) => {
    const flags = { sandboxes: opts.sandboxes, cpus: opts.cpus, memoryMb: opts.memory, pids: opts.pids, timeoutSec: opts.timeout, logBytes: opts.logBytes };
    // null returns a limit to the daemon's default.
    const change: UpdateQuotaRequest = Object.fromEntries(
      Object.entries(flags)
        .filter(([, value]) => value !== undefined)
        .map(([key, value]) => [key, value === 'default' ? null : value]),
    );
    if (Object.keys(change).length === 0) {
      throw new UsageError('nothing to set: give at least one of --sandboxes, --cpus, --memory, --pids, --timeout, --log-bytes');
    }
    const view = await (await client(cli)).quotas.set(user, change);
    if (opts.json) printJson(view);
    else printLine(describeQuota(view));
  });
}

function describeQuota(view: Quota): string {
  const { limits, usage, overrides } = view;
  const source = (key: keyof Quota['limits']) => (overrides[key] === undefined ? 'default' : 'set by an admin');
  const rows = [
    ['sandboxes', String(usage.sandboxes), String(limits.sandboxes), source('sandboxes')],
    ['cpus', String(+usage.cpus.toFixed(3)), String(limits.cpus), source('cpus')],
    ['memory', `${usage.memoryMb} MB`, `${limits.memoryMb} MB`, source('memoryMb')],
    ['pids', String(usage.pids), String(limits.pids), source('pids')],
    ['log bytes', formatBytes(usage.logBytes), formatBytes(limits.logBytes), source('logBytes')],
    ['timeout', '-', `${limits.timeoutSec} s`, source('timeoutSec')],
  ];
  if (view.workspaces) {
    const ws = view.workspaces;
    rows.push(['workspaces', String(ws.count), String(ws.maxCount), 'daemon'], ['workspace disk', formatBytes(ws.diskBytes), formatBytes(ws.maxDiskBytes), 'daemon']);
  }
  return [
    `Quota of ${view.user.name} (${view.user.id}):`,
    table(['', 'IN USE', 'LIMIT', ''], rows),
    'cpus, memory and pids are summed over live sandboxes; timeout is the longest a run or exec may ask;',
    'past the log bytes, the oldest run output is trimmed first.',
    ...(view.workspaces ? ['workspace disk sums the --disk sizes of your workspaces (workspace limits are the daemon\'s, the same for all).'] : []),
  ].join('\n');
}

