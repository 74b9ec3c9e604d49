// How the CLI prints: data as JSON with --json, else as text for people; errors as one line on
// stderr with what to do next; streamed output with backpressure.
import type { Sandbox } from '@roost/sdk';

export class UsageError extends Error {}

/** A failure that already told the user what happened; carries the exit code. */
export class ExitError extends Error {
  constructor(readonly exitCode: number) {
    super(`exit ${exitCode}`);
  }
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function printLine(text: string): void {
  process.stdout.write(`${text}\n`);
}

/** Writes to a stream, waiting when it is full so a slow reader slows the command, not memory. */
export function writeWithBackpressure(stream: NodeJS.WriteStream, data: Uint8Array): Promise<void> | undefined {
  if (stream.write(data)) return undefined;
  return new Promise((resolve) => stream.once('drain', resolve));
}

export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((header, column) => Math.max(header.length, ...rows.map((row) => row[column].length)));
  const line = (cells: string[]) => cells.map((cell, column) => cell.padEnd(widths[column])).join('  ').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

export function ago(iso: string, now = Date.now()): string {
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ago`;
  return `${Math.floor(seconds / 86400)}d ago`;
}

export function describeSandbox(sandbox: Sandbox): string {
  const rows: [string, string][] = [
    ['name', sandbox.name],
    ['id', sandbox.id],
    ['status', sandbox.status + (sandbox.statusReason ? ` (${sandbox.statusReason})` : '')],
    ['image', sandbox.image],
    ['persistent', sandbox.persistent ? 'yes' : 'no'],
    ['limits', `${sandbox.cpus} cpu, ${sandbox.memoryMb} MB memory, ${sandbox.pidsLimit} processes, ${sandbox.openFiles} open files`],
    ['network', sandbox.network === 'nat' ? 'nat (egress with DNS)' : 'none (no way out)'],
    ['ssh user', sandbox.defaultUser],
    ['ssh agent', sandbox.sshAgentForwarding ? 'forwarding allowed (ssh -A)' : 'not forwarded'],
    ['allow net', sandbox.allowNet.length ? sandbox.allowNet.join(', ') : 'every public destination'],
    ['deny net', sandbox.denyNet.length ? sandbox.denyNet.join(', ') : 'none'],
    ['created', `${sandbox.createdAt} (${ago(sandbox.createdAt)})`],
  ];
  if (sandbox.workspace) {
    const ws = sandbox.workspace;
    rows.push(['workspace', `${ws.name} (${ws.id})`]);
    rows.push(['disk', `${formatBytes(ws.usedBytes)} used, ${ws.limitBytes === null ? 'no limit' : `limit ${formatBytes(ws.limitBytes)}`}`]);
    rows.push(['synced', ws.lastSyncedAt ? `${ws.lastSyncedAt} (${ago(ws.lastSyncedAt)})${ws.pendingBytes !== null ? `, ${formatBytes(ws.pendingBytes)} pending` : ''}` : `never${ws.pendingBytes !== null ? `, ${formatBytes(ws.pendingBytes)} pending` : ''}`]);
    if (ws.failingSince) rows.push(['sync', `sync failing since ${ws.failingSince}: ${ws.failure ?? 'unknown reason'}`]);
  } else if (sandbox.workspaceId === null) rows.push(['workspace', 'none (its files go with it)']);
  if (sandbox.exitCode !== null) rows.push(['exit code', String(sandbox.exitCode)]);
  if (sandbox.logTrimmedBytes > 0) rows.push(['logs', `the oldest ${sandbox.logTrimmedBytes} bytes were trimmed (log quota: roost quota)`]);
  return rows.map(([key, value]) => `${key.padEnd(11)}${value}`).join('\n');
}

/**
 * What `run` adds on stderr after the script's own output: nothing when a one-shot run succeeded;
 * the sandbox's name when the run failed or is kept, so `roost logs`/`exec` can name it.
 */
export function runOutcome(exit: { exitCode: number; reason?: string }, sandbox: Sandbox | undefined, persistent: boolean): string {
  const lines: string[] = [];
  if (!sandbox) {
    if (exit.reason) lines.push(`roost: ${exit.reason}`);
  } else if (exit.reason || exit.exitCode !== 0) {
    const what = exit.reason ?? `the script exited with code ${exit.exitCode}`;
    lines.push(`roost: ${what} in sandbox ${sandbox.name}: \`roost logs ${sandbox.name}\` shows its output, \`roost status ${sandbox.name}\` how it ended`);
  }
  if (persistent && sandbox) {
    lines.push(`sandbox ${sandbox.name} (${sandbox.id}) kept: roost exec ${sandbox.name} <command>, roost rm ${sandbox.name}`);
  }
  return lines.map((line) => `${line}\n`).join('');
}

/** 1536 → "1.5 KiB": sizes as people read them. */
export function formatBytes(bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${Math.round(bytes)} bytes` : `${+value.toFixed(1)} ${units[unit]}`;
}
