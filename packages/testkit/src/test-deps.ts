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

/** A command's stdout and stderr as text, and its exit code, once it ended. */
export async function collectOutput(handle: CommandHandle): Promise<{ stdout: string; stderr: string; exitCode: number | null }> {
  const out = { stdout: '', stderr: '' };
  for await (const chunk of handle.output()) out[chunk.stream] += Buffer.from(chunk.data).toString();
  return { ...out, exitCode: (await handle.wait()).exitCode };
}
