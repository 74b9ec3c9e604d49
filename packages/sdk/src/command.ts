import type { ErrorBody } from '@roost/contract/errors';
import { decodeFrames, decodeJsonPayload, FrameKind, type Frame } from '@roost/contract/stream';
import type { ExitFrame, Sandbox } from '@roost/contract';
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
 * exit status; `kill()` ends the command.
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

  constructor(
    private readonly response: Promise<Response>,
    private readonly abort: AbortController,
  ) {}

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
    const response = await this.response;
    if (!response.body) throw new Error('empty response from roostd');
    const frames = decodeFrames(response.body as AsyncIterable<Uint8Array>);
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
