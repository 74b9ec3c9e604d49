import { spawn } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { constants } from 'node:os';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion; never throws for a non-zero exit (callers decide). */
export function runCmd(cmd: string, args: string[], input?: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    // Resolve on exit, not on close: `crun create` leaves the container's init holding our
    // pipes open for as long as the container lives. Give the pipes a moment to drain.
    child.on('exit', (code, signal) => {
      const finish = () => {
        child.stdout!.destroy();
        child.stderr!.destroy();
        resolve({ code: code ?? 128 + signalNumber(signal), stdout, stderr });
      };
      const timer = setTimeout(finish, 20);
      child.once('close', () => {
        clearTimeout(timer);
        finish();
      });
    });
    if (input !== undefined) {
      // A command that fails before reading its input closes the pipe: its exit code tells why.
      child.stdin!.on('error', () => {});
      child.stdin!.end(input);
    }
  });
}

/**
 * Runs a command whose descendants outlive it holding its stdio (`crun create`: the
 * container's init inherits it). Its stderr goes to `logFile` instead of a pipe, so the exit
 * is the end, with no wait for pipes that will not close.
 */
export function runToFile(cmd: string, args: string[], logFile: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const fd = openSync(logFile, 'w');
    let child;
    try {
      child = spawn(cmd, args, { stdio: ['ignore', 'ignore', fd] });
    } finally {
      closeSync(fd);
    }
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      let stderr = '';
      try {
        stderr = readFileSync(logFile, 'utf8');
      } catch {
        // removed meanwhile
      }
      resolve({ code: code ?? 128 + signalNumber(signal), stdout: '', stderr });
    });
  });
}

/** Like runCmd but throws an Error naming the command and its stderr on failure. */
export async function mustRun(cmd: string, args: string[], input?: string): Promise<string> {
  const r = await runCmd(cmd, args, input);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  }
  return r.stdout;
}


export function signalNumber(signal: NodeJS.Signals | null | undefined): number {
  if (!signal) return 0;
  return (constants.signals as Record<string, number>)[signal] ?? 0;
}

export function signalName(n: number): string | undefined {
  for (const [name, num] of Object.entries(constants.signals)) if (num === n) return name;
  return undefined;
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Signals a process and every descendant it has (host pids, read from /proc). A script's
 * children must end with it: SIGKILL of `bash -c 'sleep 30; echo'` alone leaves the sleep
 * running as an orphan of the sandbox's init.
 */
export function killTree(rootPid: number, signal: NodeJS.Signals): void {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid <= 0) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    // The command name may hold spaces and parentheses: the ppid follows the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    const siblings = children.get(ppid);
    if (siblings) siblings.push(pid);
    else children.set(ppid, [pid]);
  }
  const tree: number[] = [];
  const walk = (pid: number) => {
    tree.push(pid);
    for (const child of children.get(pid) ?? []) walk(child);
  };
  walk(rootPid);
  for (const pid of tree) {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}
