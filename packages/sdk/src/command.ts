import type { ErrorBody } from '@roost/contract/errors';
import { ClientFrameKind, decodeFrames, decodeJsonPayload, FrameKind, maxStdinFrameBytes, type Frame } from '@roost/contract/stream';
import type { ExitFrame, Sandbox } from '@roost/contract';
import { resizePayload, type CommandSocket } from './command-socket.js';
import { RoostApiError } from './errors.js';

/** One piece of a command's output. */
export interface OutputChunk {
  stream: 'stdout' | 'stderr';
  data: Uint8Array;
}

/** How a command ended. `reason` is set when Roost ended it (timeout, disconnect). */
export type CommandExit = ExitFrame;

/**
 * A command running in a sandbox. Iterate `output()` to stream stdout and stderr as they come
 * (the command is slowed down, not buffered, when you read slowly); `wait()` resolves with the
 * exit status; `kill()` ends the command. Started with streamed stdin (`stdin: true`, an async
 * iterable) or a terminal (`tty`), it also takes input: `writeStdin()`, `closeStdin()`, `resize()`.
 *
 * @example
 * const cmd = sandbox.exec(['bash', '-c', 'echo hi; exit 3']);
 * for await (const chunk of cmd.output()) process.stdout.write(chunk.data);
 * const { exitCode } = await cmd.wait(); // 3
 */
export class CommandHandle {
  private frames?: Promise<AsyncGenerator<Frame>>;
  private exit?: CommandExit;
  private outputTaken = false;
  private sandboxInfo?: Sandbox;

  /**
   * @internal `body`: the daemon's frames as bytes (a POST's response body, or the WebSocket's
   * messages); `socket`: the WebSocket, when the command takes streamed input.
   */
  constructor(
    private readonly body: Promise<AsyncIterable<Uint8Array>>,
    private readonly abort: AbortController,
    private readonly socket?: Promise<CommandSocket>,
  ) {}

  /**
   * Writes to the command's stdin; resolves once the daemon's socket took it (await it to go no
   * faster than the command reads). Needs `stdin: true` (or a terminal) when started.
   * @example
   * const cmd = roost.exec('dev', ['wc', '-c'], { stdin: true });
   * await cmd.writeStdin('hello');
   * await cmd.closeStdin();
   * for await (const chunk of cmd.output()) process.stdout.write(chunk.data); // 5
   */
  async writeStdin(data: string | Uint8Array): Promise<void> {
    const socket = await this.input();
    const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
    for (let offset = 0; offset < bytes.length; offset += maxStdinFrameBytes) {
      await socket.send(ClientFrameKind.stdin, bytes.subarray(offset, offset + maxStdinFrameBytes));
    }
  }

  /**
   * Ends the command's stdin: it reads EOF.
   * @example await cmd.closeStdin();
   */
  async closeStdin(): Promise<void> {
    await (await this.input()).send(ClientFrameKind.stdinEnd, new Uint8Array(0));
  }

  /**
   * Sets the size of the command's terminal (exec with `tty`); the command gets SIGWINCH.
   * @example process.stdout.on('resize', () => void cmd.resize(process.stdout.columns, process.stdout.rows));
   */
  async resize(cols: number, rows: number): Promise<void> {
    await (await this.input()).send(ClientFrameKind.resize, resizePayload(cols, rows));
  }

  private input(): Promise<CommandSocket> {
    if (!this.socket) throw new Error('this command takes no input: start it with { stdin: true }, a stream as stdin, or a tty');
    return this.socket;
  }

  /** stdout and stderr chunks in arrival order; can be iterated once. */
  async *output(): AsyncGenerator<OutputChunk> {
    if (this.outputTaken) throw new Error('output() can be iterated only once');
    this.outputTaken = true;
    try {
      for await (const frame of await this.openFrames()) {
        if (frame.kind === FrameKind.stdout || frame.kind === FrameKind.stderr) {
          yield { stream: frame.kind === FrameKind.stdout ? 'stdout' : 'stderr', data: frame.payload };
        } else if (frame.kind === FrameKind.sandbox) {
          // A run sends the sandbox again once the script ended: its final status.
          this.sandboxInfo = decodeJsonPayload<Sandbox>(frame);
        } else if (frame.kind === FrameKind.exit) {
          this.exit = decodeJsonPayload<CommandExit>(frame);
        } else if (frame.kind === FrameKind.error) {
          const body = decodeJsonPayload<ErrorBody>(frame);
          throw RoostApiError.fromBody(500, body);
        }
      }
    } catch (error) {
      if (this.abort.signal.aborted) return;
      throw error;
    }
  }

  /** Resolves with the exit status once the command ended (reading and dropping any output not read). */
  async wait(): Promise<CommandExit> {
    if (!this.outputTaken) for await (const _ of this.output());
    if (!this.exit) {
      if (this.abort.signal.aborted) return { exitCode: 130, signal: 'SIGKILL', reason: 'killed by the client' };
      throw new Error('the connection to roostd ended before the command did');
    }
    return this.exit;
  }

  /** Ends the command: the daemon kills it when the connection closes. */
  kill(): void {
    this.abort.abort();
  }

  /**
   * For a run: the sandbox the script runs in, as last described: known once the stream began,
   * and after `wait()` its final state (status and exit code after the script ended).
   */
  async sandbox(): Promise<Sandbox | undefined> {
    await this.openFrames();
    return this.sandboxInfo;
  }

  private openFrames(): Promise<AsyncGenerator<Frame>> {
    this.frames ??= this.open();
    return this.frames;
  }

  private async open(): Promise<AsyncGenerator<Frame>> {
    const frames = decodeFrames(await this.body);
    // A run begins with its sandbox; peek at it so sandbox() can answer before any output.
    const first = await frames.next();
    const rest = async function* (head: IteratorResult<Frame>) {
      if (!head.done) yield head.value;
      yield* frames;
    };
    if (!first.done && first.value.kind === FrameKind.sandbox) {
      this.sandboxInfo = decodeJsonPayload<Sandbox>(first.value);
      return rest({ done: true, value: undefined });
    }
    return rest(first);
  }
}
