// stdin and terminals for `run` and `exec`, the way docker does it: stdin goes to the command
// when it is a pipe, a socket or a file (`echo hi | roost run cat`), or with -i; a terminal
// (-t) puts the local one in raw mode, restored on every way out, and follows its size.
import { fstatSync } from 'node:fs';
import { isatty } from 'node:tty';
import type { CommandHandle } from '@roost/sdk';
import { UsageError } from './output.js';

/**
 * Whether to send our stdin: always with -i; else only when it is a pipe, socket or regular
 * file. A terminal or /dev/null (a character device, as cron and `bench` give) is left alone,
 * so `roost run true` at a prompt takes the plain POST and never waits for input.
 */
export function sendsStdin(interactive: boolean | undefined): boolean {
  if (interactive) return true;
  try {
    const stat = fstatSync(0);
    return stat.isFIFO() || stat.isSocket() || stat.isFile();
  } catch {
    return false; // fd 0 closed
  }
}

export interface TerminalRequest {
  cols: number;
  rows: number;
  term: string;
}

/** The terminal to ask for with -t; a usage error when stdin is not one (as docker says). */
export function terminalRequest(term: string | undefined): TerminalRequest {
  if (!isatty(0)) {
    throw new UsageError('-t needs a terminal, and the input device is not a TTY: drop -t (stdin is still sent from a pipe or file), or run it from a terminal');
  }
  const size = isatty(1) ? process.stdout : isatty(2) ? process.stderr : undefined;
  return { cols: size?.columns ?? 0, rows: size?.rows ?? 0, term: term || 'xterm-256color' };
}

/**
 * Makes the local terminal the command's: raw mode when our keys go to it (-i -t, so Ctrl-C
 * reaches the remote shell as a byte), and resizes follow SIGWINCH. Returns the undo, which
 * also runs if the process exits another way.
 */
export function attachTerminal(handle: CommandHandle, opts: { raw: boolean }): () => void {
  const input = process.stdin;
  const raw = opts.raw && input.isTTY;
  if (raw) input.setRawMode(true);
  const sized = isatty(1) ? process.stdout : undefined;
  const onResize = () => {
    if (sized) handle.resize(sized.columns, sized.rows).catch(() => {});
  };
  sized?.on('resize', onResize);
  let restored = false;
  const restore = () => {
    if (restored) return;
    restored = true;
    sized?.off('resize', onResize);
    process.off('exit', restore);
    if (raw) {
      try {
        input.setRawMode(false);
      } catch {
        // the terminal went away
      }
    }
  };
  process.on('exit', restore);
  // A signal that would end us without 'exit' must not leave the terminal raw.
  for (const [signal, code] of [['SIGTERM', 143], ['SIGHUP', 129]] as const) {
    process.once(signal, () => {
      restore();
      handle.kill();
      process.exit(code);
    });
  }
  return restore;
}
