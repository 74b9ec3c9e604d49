// `run`, `exec` and `logs`: stream a command's output to this terminal, stdout to stdout and
// stderr to stderr, and let Ctrl-C end the command in the sandbox.
import type { CommandExit, CommandHandle } from '@roost/sdk';
import { writeWithBackpressure } from './output.js';

export interface StreamedResult {
  exit: CommandExit;
  stdout: string;
  stderr: string;
}

/**
 * Pipes the handle's output here. With `collect` (for --json) the output is gathered instead of
 * printed. Ctrl-C kills the remote command; the promise then resolves with exit code 130.
 */
export async function streamCommand(handle: CommandHandle, opts: { collect: boolean }): Promise<StreamedResult> {
  const collected = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
  let interrupted = false;
  const onSigint = () => {
    interrupted = true;
    handle.kill();
  };
  process.on('SIGINT', onSigint);
  try {
    for await (const chunk of handle.output()) {
      if (opts.collect) {
        collected[chunk.stream].push(Buffer.from(chunk.data));
        continue;
      }
      const target = chunk.stream === 'stdout' ? process.stdout : process.stderr;
      const full = writeWithBackpressure(target, chunk.data);
      if (full) await full;
    }
    const exit = interrupted ? { exitCode: 130, signal: 'SIGINT', reason: 'interrupted (Ctrl-C)' } : await handle.wait();
    return {
      exit,
      stdout: Buffer.concat(collected.stdout).toString('utf8'),
      stderr: Buffer.concat(collected.stderr).toString('utf8'),
    };
  } finally {
    process.off('SIGINT', onSigint);
  }
}
