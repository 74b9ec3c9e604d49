// What tests hand to core and read from the SDK, in one place: a logger that drops every line,
// the wall clock, and a command's whole output.
import type { Clock, Logger } from '@roost/core';
import type { CommandHandle } from '@roost/sdk';

export const silentLogger: Logger = { info() {}, warn() {}, error() {}, debug() {} };

/** Real time and timers, for tests that wait on real work (a ManualClock for the rest). */
export const wallClock: Clock = {
  now: () => new Date(),
  setTimeout: (fn, ms) => {
    const timer = setTimeout(fn, ms);
    return { cancel: () => clearTimeout(timer) };
  },
};

/** stdout and stderr of a stream of output chunks (SDK or core), as text, once it ended. */
export async function drainOutput(output: AsyncIterable<{ stream: 'stdout' | 'stderr'; data: Uint8Array }>): Promise<{ stdout: string; stderr: string }> {
  const out = { stdout: '', stderr: '' };
  for await (const chunk of output) out[chunk.stream] += Buffer.from(chunk.data).toString();
  return out;
}

/** A command's stdout and stderr as text, and its exit code, once it ended. */
export async function collectOutput(handle: CommandHandle): Promise<{ stdout: string; stderr: string; exitCode: number | null }> {
  return { ...(await drainOutput(handle.output())), exitCode: (await handle.wait()).exitCode };
}
