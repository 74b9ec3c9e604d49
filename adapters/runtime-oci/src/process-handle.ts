import type { ChildProcess } from 'node:child_process';
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import type { ExitStatus, ProcessHandle } from '@roost/core';
import { execExitStatus } from './engine-failure.js';
import { killTree, signalName, signalNumber } from './proc.js';

/** After the process exits, output still arriving within this quiet period is delivered. */
const GRACE_MS = 50;
/** How often to look for the pid file, after which the process file can go. */
const PROCESS_FILE_POLL_MS = 5;

/**
 * Copies `src` into a PassThrough we control, honouring backpressure, so that after the
 * process exits we can end the consumer's stream even though a background child still holds
 * the pipe's write end (which would otherwise keep it open forever).
 */
function relay(src: Readable): { out: PassThrough; settle(): void } {
  const out = new PassThrough();
  let lastData = Date.now();
  let ended = false;
  let waitingDrain = false;
  src.on('data', (chunk: Buffer) => {
    lastData = Date.now();
    if (!out.write(chunk)) {
      src.pause();
      waitingDrain = true;
      out.once('drain', () => {
        waitingDrain = false;
        lastData = Date.now();
        src.resume();
      });
    }
  });
  const finish = () => {
    if (ended) return;
    ended = true;
    out.end();
  };
  src.on('end', finish);
  src.on('error', finish);
  out.on('close', () => src.destroy());
  return {
    out,
    // Called once the process exited: end as soon as the pipe has been quiet for GRACE_MS.
    settle() {
      const quiet = () => !waitingDrain && Date.now() - lastData >= GRACE_MS;
      const check = () => {
        if (ended) return;
        if (!quiet()) {
          setTimeout(check, GRACE_MS).unref();
          return;
        }
        // Timers run before the loop polls the pipe: when the loop was busy for longer than
        // the grace period, output written before the exit may still be waiting there. Look
        // again after one poll (setImmediate runs after it) before cutting the stream.
        setImmediate(() => {
          if (ended) return;
          if (!quiet()) {
            setTimeout(check, GRACE_MS).unref();
            return;
          }
          src.destroy();
          finish();
        });
      };
      setTimeout(check, GRACE_MS).unref();
    },
  };
}

/**
 * A terminal dimension as the kernel takes it (u16). 0 means unknown, as OpenSSH sends when its
 * own output is not a terminal; larger values, which an SSH client may send, are clamped.
 */
export function terminalDimension(n: number): number {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`terminal dimension ${n}: must be a whole number (0 = unknown)`);
  return Math.min(n, 0xffff);
}

/** A resize request for roost-pty: u16 cols, u16 rows, big-endian. */
export function resizeRecord(cols: number, rows: number): Buffer {
  const record = Buffer.allocUnsafe(4);
  record.writeUInt16BE(terminalDimension(cols), 0);
  record.writeUInt16BE(terminalDimension(rows), 2);
  return record;
}

export function toExitStatus(code: number | null, signal: NodeJS.Signals | null): ExitStatus {
  if (signal) return { exitCode: 128 + signalNumber(signal), signal };
  const exitCode = code ?? 255;
  // The engine reports a signal death of the inner process as 128+N, like a shell does.
  const name = exitCode > 128 ? signalName(exitCode - 128) : undefined;
  return name ? { exitCode, signal: name } : { exitCode };
}

/**
 * Wraps `crun exec`. kill() signals the real process by its host pid (from --pid-file):
 * the engine does not forward SIGKILL, and killing the engine would orphan the process.
 * `resizes`: the pipe to roost-pty's resize fd, when the process runs under a terminal.
 * `processFile`: the engine's `--process` file (it may hold secrets in its env): removed as soon
 * as the pid file shows the engine has read it and started the process, or when it exits.
 */
export function processHandle(child: ChildProcess, pidFile: string, resizes?: Writable, processFile?: string, engineLog?: string): ProcessHandle {
  const stdout = relay(child.stdout!);
  const stderr = relay(child.stderr!);
  let exited = false;
  const status = new Promise<ExitStatus>((resolve, reject) => {
    child.once('error', (e) => {
      exited = true;
      removeProcessFile();
      stdout.settle();
      stderr.settle();
      reject(e);
    });
    child.once('exit', (code, signal) => {
      exited = true;
      stdout.settle();
      stderr.settle();
      child.stdin?.destroy();
      resizes?.destroy();
      fs.rm(pidFile, { force: true }).catch(() => {});
      removeProcessFile();
      const exit = toExitStatus(code, signal);
      if (!engineLog) return resolve(exit);
      // The engine's own log says whether a 255 was its failure to start the process (execExitStatus).
      const read = exit.exitCode === 255 ? fs.readFile(engineLog, 'utf8').catch(() => '') : Promise.resolve('');
      void read.then((log) => {
        fs.rm(engineLog, { force: true }).catch(() => {});
        resolve(execExitStatus(exit, log));
      });
    });
  });
  status.catch(() => {});
  let processFileRemoved = !processFile;
  function removeProcessFile(): void {
    if (processFileRemoved) return;
    processFileRemoved = true;
    fs.rm(processFile!, { force: true }).catch(() => {});
  }
  // The engine writes the pid file after it has read the process file (a few ms after spawn).
  const removeOnceStarted = () => {
    if (processFileRemoved) return;
    if (existsSync(pidFile)) removeProcessFile();
    else setTimeout(removeOnceStarted, PROCESS_FILE_POLL_MS).unref();
  };
  removeOnceStarted();
  // Writing after the process exited fails with EPIPE; unhandled, that would crash the daemon.
  child.stdin?.on('error', () => {});
  resizes?.on('error', () => {});

  const readPid = (): number | undefined => {
    try {
      const pid = Number(readFileSync(pidFile, 'utf8').trim());
      return pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  };

  const kill = (signal: NodeJS.Signals = 'SIGKILL') => {
    // An unknown name (an SSH client may send any) is ignored, as sshd does: Node would throw it
    // from child.kill() below, inside a timer, where nothing catches it.
    if (!signalNumber(signal)) return;
    const started = Date.now();
    const attempt = () => {
      // While the engine is alive it has not reaped the process, so its pid cannot be reused.
      if (exited) return;
      const pid = readPid();
      if (pid) {
        killTree(pid, signal);
        return;
      }
      // The pid file appears a few ms after spawn; until then keep trying, then give up on
      // the inner process and stop the engine itself.
      if (Date.now() - started > 2000) child.kill(signal);
      else setTimeout(attempt, 5);
    };
    attempt();
  };

  return {
    stdout: stdout.out,
    stderr: stderr.out,
    stdin: child.stdin ?? undefined,
    wait: () => status,
    kill,
    ...(resizes && {
      resize(cols: number, rows: number) {
        const record = resizeRecord(cols, rows);
        // A client may send sizes without end; roost-pty reads each at once, so a pipe that
        // holds a page of them unread means it is stopped: drop the size rather than queue it.
        if (!exited && !resizes.destroyed && resizes.writableLength < 4096) resizes.write(record);
      },
    }),
  };
}
