// Runs the real `roost` binary as a user would, against a test daemon.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const cliPath = fileURLToPath(new URL('../../../apps/cli/dist/main.js', import.meta.url));

export interface CliResult {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  /** stdout as bytes (a tar stream, binary output). */
  stdoutBytes: Buffer;
  stderr: string;
}

export interface RunCliOpts {
  /** Extra environment; HOME defaults to a fresh temp dir so no real config is touched. */
  env?: Record<string, string | undefined>;
  /** Called with the child process, e.g. to send it SIGINT. */
  onSpawn?(child: import('node:child_process').ChildProcess): void;
  /** What the CLI reads on stdin (a pipe, then EOF); default: nothing, EOF at once. */
  stdin?: string | Uint8Array;
  /** Working directory of the CLI (default: the test's). */
  cwd?: string;
}

export function runCli(args: string[], opts: RunCliOpts = {}): Promise<CliResult> {
  const home = mkdtempSync(join(tmpdir(), 'roost-home-'));
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: home, ...opts.env };
  for (const key of Object.keys(env)) if (env[key] === undefined) delete env[key];
  const child = spawn(process.execPath, [cliPath, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'], ...(opts.cwd && { cwd: opts.cwd }) });
  opts.onSpawn?.(child);
  // The CLI may exit before reading its stdin; that is not the test's failure.
  child.stdin.on('error', () => {});
  child.stdin.end(opts.stdin ?? '');
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
  child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (exitCode, signal) => {
      rmSync(home, { recursive: true, force: true });
      const stdoutBytes = Buffer.concat(stdout);
      resolve({ exitCode, signal, stdout: stdoutBytes.toString('utf8'), stdoutBytes, stderr: Buffer.concat(stderr).toString('utf8') });
    });
  });
}
