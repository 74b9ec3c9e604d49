// Merging a process's stdout and stderr into one ordered sequence of chunks. Each source is
// pulled one chunk at a time and waits until the consumer took that chunk, so a slow consumer
// slows the process down (backpressure) instead of making the daemon buffer its output.
//
// Not Promise.race over the two sources' pending reads: a read that stays pending for the whole
// run (a quiet stderr) collects a reaction per race, each holding a chunk of the other stream,
// and the daemon's memory grows with the output (1 GiB of output kept 1 GiB of RSS).

export interface OutputChunk {
  stream: 'stdout' | 'stderr';
  data: Uint8Array;
}

export async function* mergeOutput(
  stdout: AsyncIterable<Uint8Array>,
  stderr: AsyncIterable<Uint8Array>,
): AsyncGenerator<OutputChunk> {
  const ready: { chunk: OutputChunk; taken(): void }[] = [];
  let wakeConsumer: (() => void) | undefined;
  const notify = () => {
    wakeConsumer?.();
    wakeConsumer = undefined;
  };
  let activeSources = 2;
  let failure: unknown;
  let stopped = false;

  const pump = async (stream: OutputChunk['stream'], source: AsyncIterable<Uint8Array>) => {
    try {
      for await (const data of source) {
        if (stopped) break;
        await new Promise<void>((taken) => {
          ready.push({ chunk: { stream, data }, taken });
          notify();
        });
      }
    } catch (error) {
      failure ??= error;
    } finally {
      activeSources -= 1;
      notify();
    }
  };
  void pump('stdout', stdout);
  void pump('stderr', stderr);

  try {
    for (;;) {
      const next = ready.shift();
      if (next) {
        yield next.chunk;
        next.taken();
        continue;
      }
      if (failure) throw failure;
      if (activeSources === 0) return;
      await new Promise<void>((resolve) => (wakeConsumer = resolve));
    }
  } finally {
    // The consumer left early (a client that disconnected): release the sources.
    stopped = true;
    for (const pending of ready.splice(0)) pending.taken();
  }
}
