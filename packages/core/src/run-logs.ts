// Output of run scripts, kept in the store for `roost logs` and followed live with `logs -f`.
import type { OutputChunk } from './output.js';
import type { LogChunk, SandboxRecord, Store } from './ports.js';

const readBatch = 256;

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
    let seq = 0;
    const append = async (chunk: OutputChunk) => {
      await this.store.appendLog(sandboxId, { seq: ++seq, stream: chunk.stream, data: chunk.data });
      // Oldest first, this run's own output last: a run larger than the quota keeps its tail.
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
   * Logged chunks; with follow, keeps yielding until the script ends. When older output was
   * trimmed to keep the owner within the log quota, a note on stderr comes first and says so.
   */
  async *read(sandbox: Pick<SandboxRecord, 'id' | 'logTrimmedBytes'>, opts: { follow: boolean }): AsyncGenerator<LogChunk> {
    const sandboxId = sandbox.id;
    if (sandbox.logTrimmedBytes > 0) {
      const note = `[roost: earlier output was trimmed (${sandbox.logTrimmedBytes} bytes, oldest first) to keep your stored logs within your quota; \`roost quota\` shows it]\n`;
      yield { seq: 0, stream: 'stderr', data: new TextEncoder().encode(note) };
    }
    let afterSeq = 0;
    for (;;) {
      const waiters = this.live.get(sandboxId);
      const change = opts.follow && waiters ? new Promise<void>((resolve) => waiters.add(resolve)) : undefined;
      const chunks = await this.store.readLogs(sandboxId, afterSeq, readBatch);
      for (const chunk of chunks) yield chunk;
      if (chunks.length > 0) afterSeq = chunks[chunks.length - 1].seq;
      if (chunks.length === readBatch) continue;
      if (!change) return;
      await change;
    }
  }

  async remove(sandboxId: string): Promise<void> {
    await this.store.deleteLogs(sandboxId);
  }
}
