// `roost workspace list|show|rm|fork|snapshots|restore`, `roost resize` and `roost sync`:
// workspaces are what sandboxes wrote to their filesystems, kept apart from them.
import type { Command } from 'commander';
import type { Workspace } from '@roost/sdk';
import { client, withJson, type JsonOpt } from './connection.js';
import type { CliEnv } from './credentials.js';
import { ago, formatBytes, printJson, printLine, table, UsageError } from './output.js';

/** --disk: a size in GB (2^30 bytes), fractions allowed. */
export function diskGb(flag: string) {
  return (value: string): number => {
    const number = /^\d+(\.\d+)?$/.test(value.trim()) ? Number(value) : NaN;
    if (!Number.isFinite(number) || number <= 0 || number > 1_000_000) {
      throw new UsageError(`${flag} expects a size in GB above 0 (fractions allowed, e.g. 0.5), got "${value}"`);
    }
    return number;
  };
}


/** "12.5 MiB of 10 GiB" or "12.5 MiB (no limit)". */
export function diskUse(ws: Pick<Workspace, 'usedBytes' | 'limitBytes'>): string {
  return `${formatBytes(ws.usedBytes)} ${ws.limitBytes === null ? '(no limit)' : `of ${formatBytes(ws.limitBytes)}`}`;
}

/** Where the workspace stands with the store: last synced, pending bytes, a failing sync. */
export function syncLine(ws: Pick<Workspace, 'lastSyncedAt' | 'pendingBytes' | 'failingSince' | 'failure'>): string {
  const parts = [ws.lastSyncedAt ? `last synced ${ws.lastSyncedAt} (${ago(ws.lastSyncedAt)})` : 'never synced'];
  if (ws.pendingBytes !== null) parts.push(`${formatBytes(ws.pendingBytes)} pending`);
  if (ws.failingSince) parts.push(`sync failing since ${ws.failingSince}: ${ws.failure ?? 'unknown reason'}`);
  return parts.join('; ');
}

export function describeWorkspace(ws: Workspace): string {
  const rows: [string, string][] = [
    ['name', ws.name],
    ['id', ws.id],
    ['disk', diskUse(ws)],
    ['sync', syncLine(ws)],
    ['used by', ws.usedBy ? `${ws.usedBy.name} (${ws.usedBy.id}, ${ws.usedBy.status})` : 'no sandbox'],
    ['forked from', ws.baseId ?? '-'],
    ['created', `${ws.createdAt} (${ago(ws.createdAt)})`],
    ['last used', ws.lastUsedAt ? `${ws.lastUsedAt} (${ago(ws.lastUsedAt)})` : 'never'],
  ];
  return rows.map(([key, value]) => `${key.padEnd(12)}${value}`).join('\n');
}

export function addWorkspaceCommands(program: Command, cli: CliEnv): void {
  const workspace = program
    .command('workspace')
    .description('your workspaces: what sandboxes wrote to their filesystems, kept apart from them')
    .addHelpText(
      'after',
      `
A workspace holds everything a sandbox wrote (installed packages included) and outlives it.
\`roost run -w <ws>\` mounts one (made on first use); \`roost new <name>\` and \`roost run -p\` get
one named after the sandbox, so stop and start keep its files. A workspace is used by one live
sandbox at a time; \`roost rm\` of a sandbox keeps its workspace.

Examples:
  roost run -w proj 'pip install requests'   # then: roost run -w proj 'python3 -c "import requests"'
  roost workspace list
  roost workspace fork proj proj-try         # copy-on-write, also of a running sandbox's
  roost workspace snapshots proj
  roost workspace restore proj <snapshot>    # the sandbox using it must be stopped
  roost workspace rm proj-try`,
    );

  withJson(workspace.command('list').alias('ls').description('your workspaces, newest first')).action(async (opts: JsonOpt) => {
    const list = await (await client(cli)).workspaces.list();
    if (opts.json) return printJson(list);
    if (list.length === 0) return printLine("No workspaces. Try: roost run -w proj 'echo kept > file'");
    printLine(
      table(
        ['NAME', 'ID', 'DISK', 'USED BY', 'LAST SYNCED'],
        list.map((ws) => [
          ws.name,
          ws.id,
          diskUse(ws),
          ws.usedBy ? `${ws.usedBy.name} (${ws.usedBy.status})` : '-',
          ws.failingSince ? `failing since ${ago(ws.failingSince)}` : ws.lastSyncedAt ? ago(ws.lastSyncedAt) : 'never',
        ]),
      ),
    );
  });

  withJson(workspace.command('show').description('details of one workspace: disk use, sync state, who uses it').argument('<ws>', 'name or id')).action(
    async (ref: string, opts: JsonOpt) => {
      const ws = await (await client(cli)).workspaces.get(ref);
      if (opts.json) printJson(ws);
      else printLine(describeWorkspace(ws));
    },
  );

  withJson(
    workspace
      .command('rm')
      .description('remove workspaces here and in the store (refused while a sandbox, running or stopped, uses one)')
      .argument('<ws...>', 'names or ids'),
  ).action(async (refs: string[], opts: JsonOpt) => {
    const roost = await client(cli);
    const removed: string[] = [];
    for (const ref of refs) {
      await roost.workspaces.remove(ref);
      removed.push(ref);
      if (!opts.json) printLine(`Removed workspace ${ref}.`);
    }
    if (opts.json) printJson({ removed });
  });

  withJson(
    workspace
      .command('fork')
      .description("a new workspace holding another's state now (copy-on-write; a running sandbox is frozen for that moment)")
      .argument('<ws>', 'name or id of the workspace to fork')
      .argument('<new>', 'name of the new workspace')
      .option('--disk <GB>', 'its size in GB (default: that of the one forked)', diskGb('--disk')),
  ).action(async (ref: string, name: string, opts: { disk?: number } & JsonOpt) => {
    const ws = await (await client(cli)).workspaces.fork(ref, name, opts.disk === undefined ? {} : { diskGb: opts.disk });
    if (opts.json) printJson(ws);
    else printLine(`Workspace ${ws.name} (${ws.id}) forked from ${ref}. Try: roost run -w ${ws.name} 'ls -la'`);
  });

  withJson(workspace.command('snapshots').description('the snapshots the store keeps of a workspace, oldest first').argument('<ws>', 'name or id')).action(
    async (ref: string, opts: JsonOpt) => {
      const snapshots = await (await client(cli)).workspaces.snapshots(ref);
      if (opts.json) return printJson(snapshots);
      if (snapshots.length === 0) return printLine(`No snapshots of ${ref} yet: one is taken at every sync (every 30 s while it runs, at stop, and on roost sync).`);
      printLine(table(['SNAPSHOT', 'TAKEN', 'SIZE', 'FILES'], snapshots.map((s) => [s.id, `${s.takenAt} (${ago(s.takenAt)})`, formatBytes(s.bytes), String(s.files)])));
    },
  );

  withJson(
    workspace
      .command('restore')
      .description('put a workspace back to one of its snapshots (its sandbox must be stopped)')
      .argument('<ws>', 'name or id')
      .argument('<snapshot>', 'snapshot id (roost workspace snapshots <ws>)'),
  ).action(async (ref: string, snapshot: string, opts: JsonOpt) => {
    const ws = await (await client(cli)).workspaces.restore(ref, snapshot);
    if (opts.json) printJson(ws);
    else printLine(`Workspace ${ws.name} restored to ${snapshot}.`);
  });

  withJson(
    program
      .command('resize')
      .description("change the disk size of a sandbox's workspace (a writer past it fails; the host and others are unaffected)")
      .argument('<sandbox>', 'name or id')
      .option('--disk <GB>', 'new size in GB (2^30 bytes; fractions allowed); required', diskGb('--disk'))
      .addHelpText('after', '\nRefused below what the workspace uses now (roost status shows it).\n\nExamples:\n  roost resize dev --disk 20'),
  ).action(async (ref: string, opts: { disk?: number } & JsonOpt) => {
    if (opts.disk === undefined) throw new UsageError('resize needs the new size: roost resize <sandbox> --disk <GB>');
    const sandbox = await (await client(cli)).resize(ref, { diskGb: opts.disk });
    if (opts.json) printJson(sandbox);
    else printLine(`${sandbox.name}: workspace ${sandbox.workspace ? diskUse(sandbox.workspace) : `of ${opts.disk} GB`}.`);
  });

  withJson(
    program
      .command('sync')
      .description("push a sandbox's workspace to the store now, without stopping it")
      .argument('<sandbox>', 'name or id')
      .addHelpText(
        'after',
        '\nA running sandbox is frozen for the moment of the capture, so the snapshot is one point in time.\nWorkspaces also sync every 30 s while running and at stop.\n\nExamples:\n  roost sync dev',
      ),
  ).action(async (ref: string, opts: JsonOpt) => {
    const { sandbox, snapshot } = await (await client(cli)).sync(ref);
    if (opts.json) printJson({ sandbox, snapshot });
    else printLine(`Synced ${sandbox.name}: snapshot ${snapshot.id} (${formatBytes(snapshot.bytes)}, ${snapshot.files} files).`);
  });
}
