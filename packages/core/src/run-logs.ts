// Output of run scripts, kept in the store for `roost logs` and followed live with `logs -f`.
import type { OutputChunk } from './output.js';
import type { LogChunk, SandboxRecord, Store } from './ports.js';

const readBatch = 256;
/**
 * The most of one run's output that is stored; the rest streams to the client only. Storing
 * costs ~1.2 ms per 64 KiB chunk (append, then trim to the quota): storing all of a 1 GiB run
 * took 22 s where streaming it alone takes 4 s.
 */
const maxStoredBytesPerRun = 16 * 1024 * 1024;

export interface LogWriterOpts {
  /** The sandbox's owner, whose stored output counts against maxBytes. */
  ownerId: string;
  /** The owner's log quota: past it, the owner's oldest output is trimmed. */
  maxBytes: number;
}

export class RunLogs {
  /** Sandboxes whose script is still writing, with the callbacks of followers waiting for more. */
  private readonly live = new Map<string, Set<() => void>>();

  constructor(private readonly store: Store) {}

  writer(sandboxId: string, opts: LogWriterOpts) {
    const waiters = new Set<() => void>();
    this.live.set(sandboxId, waiters);
    const wake = () => {
      for (const resolve of waiters) resolve();
      waiters.clear();
    };
    // One run never holds more than the whole quota, so trimming takes other runs' output first.
    const maxRunBytes = Math.min(maxStoredBytesPerRun, opts.maxBytes);
    let seq = 0;
    let bytes = 0;
    let cut = false;
    const append = async (chunk: OutputChunk) => {
      if (cut) return;
      const room = maxRunBytes - bytes;
      const kept = chunk.data.length > room ? chunk.data.subarray(0, room) : chunk.data;
      if (kept.length > 0) {
        bytes += kept.length;
        await this.store.appendLog(sandboxId, { seq: ++seq, stream: chunk.stream, data: kept });
      }
      if (kept.length < chunk.data.length) {
        cut = true;
        const note = `\n[roost: log cut after ${bytes} bytes (at most ${maxRunBytes} are kept of one run); the script's output was not cut]\n`;
        await this.store.appendLog(sandboxId, { seq: ++seq, stream: 'stderr', data: new TextEncoder().encode(note) });
      }
      // Past the quota, the owner's oldest stored output goes first.
      await this.store.trimLogs(opts.ownerId, opts.maxBytes);
      wake();
    };
    return {
      async *tee(chunks: AsyncIterable<OutputChunk>): AsyncGenerator<OutputChunk> {
        for await (const chunk of chunks) {
          await append(chunk);
          yield chunk;
        }
      },
      close: async () => {
        this.live.delete(sandboxId);
        wake();
      },
    };
  }

  /**
   * Whether the sandbox has run logs to show: a run is writing, one ended (its exit code is
   * kept), or output of one is stored. A sandbox still being made may be a run's, so it counts.
   */
  async hasRun(sandbox: Pick<SandboxRecord, 'id' | 'status' | 'exitCode' | 'logTrimmedBytes'>): Promise<boolean> {
    if (sandbox.status === 'pending' || sandbox.exitCode !== null || sandbox.logTrimmedBytes > 0 || this.live.has(sandbox.id)) return true;
    return (await this.store.readLogs(sandbox.id, 0, 1)).length > 0;
  }

  /**
   * Logged chunks; with follow, keeps yielding until the script ends or `signal` aborts. A
   * follower whose client left must abort: waiting on a quiet script, it would stay in `live`.
   * When older output was trimmed to keep the owner within the log quota, a note on stderr
   * comes first and says so.
   */
  async *read(sandbox: Pick<SandboxRecord, 'id' | 'logTrimmedBytes'>, opts: { follow: boolean; signal?: AbortSignal }): AsyncGenerator<LogChunk> {
    const sandboxId = sandbox.id;
    if (sandbox.logTrimmedBytes > 0) {
      const note = `[roost: earlier output was trimmed (${sandbox.logTrimmedBytes} bytes, oldest first) to keep your stored logs within your quota; \`roost quota\` shows it]\n`;
      yield { seq: 0, stream: 'stderr', data: new TextEncoder().encode(note) };
    }
    let afterSeq = 0;
    let stopWaiting: (() => void) | undefined;
    const onAbort = () => stopWaiting?.();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for (;;) {
        if (opts.signal?.aborted) return;
        const waiters = this.live.get(sandboxId);
        const change =
          opts.follow && waiters
            ? new Promise<void>((resolve) => {
                waiters.add(resolve);
                stopWaiting = () => {
                  waiters.delete(resolve);
                  resolve();
                };
              })
            : undefined;
        const chunks = await this.store.readLogs(sandboxId, afterSeq, readBatch);
        for (const chunk of chunks) yield chunk;
        if (chunks.length > 0) afterSeq = chunks[chunks.length - 1].seq;
        if (chunks.length === readBatch) continue;
        if (!change) return;
        await change;
      }
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }

  async remove(sandboxId: string): Promise<void> {
    await this.store.deleteLogs(sandboxId);
  }
}
