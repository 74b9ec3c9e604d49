// Merging a process's stdout and stderr into one ordered sequence of chunks, pulling one chunk
// at a time from each so that a slow consumer slows the process down (backpressure) instead of
// making the daemon buffer its output.

export interface OutputChunk {
  stream: 'stdout' | 'stderr';
  data: Uint8Array;
}

export async function* mergeOutput(
  stdout: AsyncIterable<Uint8Array>,
  stderr: AsyncIterable<Uint8Array>,
): AsyncGenerator<OutputChunk> {
  const sources = [
    { stream: 'stdout' as const, iterator: stdout[Symbol.asyncIterator]() },
    { stream: 'stderr' as const, iterator: stderr[Symbol.asyncIterator]() },
  ];
  type Pull = { index: number; result: IteratorResult<Uint8Array> };
  const pending = new Map<number, Promise<Pull>>();
  const pull = (index: number) =>
    pending.set(index, sources[index].iterator.next().then((result) => ({ index, result })));
  pull(0);
  pull(1);
  try {
    while (pending.size > 0) {
      const { index, result } = await Promise.race(pending.values());
      if (result.done) {
        pending.delete(index);
        continue;
      }
      yield { stream: sources[index].stream, data: result.value };
      pull(index);
    }
  } finally {
    // Stop both sources when the consumer leaves early (a client that disconnected).
    await Promise.allSettled(sources.map((source) => source.iterator.return?.()));
  }
}
