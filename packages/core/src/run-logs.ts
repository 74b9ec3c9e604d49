// Output of run scripts, kept in the store for `roost logs` and followed live with `logs -f`.
import type { OutputChunk } from './output.js';
import type { LogChunk, Store } from './ports.js';

const readBatch = 256;

export class RunLogs {
  /** Sandboxes whose script is still writing, with the callbacks of followers waiting for more. */
  private readonly live = new Map<string, Set<() => void>>();

  constructor(
    private readonly store: Store,
    private readonly maxBytes: number,
  ) {}

  writer(sandboxId: string) {
    const waiters = new Set<() => void>();
    this.live.set(sandboxId, waiters);
    const wake = () => {
      for (const resolve of waiters) resolve();
      waiters.clear();
    };
    let seq = 0;
    let bytes = 0;
    let truncated = false;
    const append = async (chunk: OutputChunk) => {
      if (truncated) return;
      if (bytes + chunk.data.length > this.maxBytes) {
        truncated = true;
        const note = `\n[roost: log cut after ${this.maxBytes} bytes; the script's output was not cut]\n`;
        await this.store.appendLog(sandboxId, { seq: ++seq, stream: 'stderr', data: new TextEncoder().encode(note) });
      } else {
        bytes += chunk.data.length;
        await this.store.appendLog(sandboxId, { seq: ++seq, stream: chunk.stream, data: chunk.data });
      }
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
   * Logged chunks; with follow, keeps yielding until the script ends or `signal` aborts. A
   * follower whose client left must abort: waiting on a quiet script, it would stay in `live`.
   */
  async *read(sandboxId: string, opts: { follow: boolean; signal?: AbortSignal }): AsyncGenerator<LogChunk> {
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
