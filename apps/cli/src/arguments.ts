// What the CLI checks in its own words before it sends anything: sandbox names and references,
// limits within the API's bounds, and one script per `run`. A mistake here is a usage error
// (exit 2) that says what to type, instead of a request the daemon refuses.
import type { Command } from 'commander';
import { sandboxNamePattern } from '@roost/contract/names';
import { UsageError } from './output.js';

/** The bounds the API takes for each limit (the contract's schemas; cli-arguments.test keeps them equal). */
export const cliLimits = {
  cpus: { max: 256 },
  memoryMb: { min: 16, max: 1024 * 1024 },
  pids: { min: 8, max: 4_194_304 },
  openFiles: { min: 64, max: 1_048_576 },
  /** A timer holds at most 2^31-1 ms (the contract's maxTimeoutSec). */
  timeoutSec: { max: Math.floor((2 ** 31 - 1) / 1000) },
} as const;

/** Sandbox ids as core makes them. */
const sandboxIdPattern = /^sb_[a-z0-9]{1,64}$/;

const nameRule = '1-63 lowercase letters, digits and "-", starting and ending with a letter or digit';

export function checkedNewName(name: string, what = 'a sandbox name'): string {
  if (!sandboxNamePattern.test(name)) throw new UsageError(`"${name}" is not ${what}: use ${nameRule} (e.g. dev-1)`);
  return name;
}

/** A sandbox the user names: its name or its id. */
export function checkedRef(ref: string): string {
  if (!sandboxNamePattern.test(ref) && !sandboxIdPattern.test(ref)) {
    throw new UsageError(`"${ref}" is not a sandbox name (${nameRule}) or id (sb_…): \`roost ls\` lists yours`);
  }
  return ref;
}

/** Commands whose <sandbox> may say `name+user` (the user to log in as). */
const takesUser = new Set(['ssh', 'proxy']);

/** `'…'` for a shell, so the hint can be pasted. */
export function shellQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/**
 * Checks, before any command's action runs, every `<sandbox>` argument (a name or an id), the
 * `<name>` of `new`, and `--name`; and tells to quote a script that came as several words.
 * A hook on the whole tree, so commands added later get the same checks.
 */
export function checkArguments(program: Command): void {
  // `roost run echo hello world` is three arguments: say how to quote instead of commander's count.
  program.commands.find((command) => command.name() === 'run')?.allowExcessArguments();
  program.hook('preAction', (_program, command) => {
    const name = command.name();
    if (name === 'run' && command.args.length > 1) {
      throw new UsageError(`run takes the script as one argument: quote it, as in roost run ${shellQuote(command.args.join(' '))}`);
    }
    command.registeredArguments.forEach((argument, index) => {
      const value = command.processedArgs[index] as string | string[] | undefined;
      if (value === undefined) return;
      const values = Array.isArray(value) ? value : [value];
      if (argument.name() === 'sandbox') {
        for (const ref of values) checkedRef(takesUser.has(name) ? ref.split('+')[0]! : ref);
      } else if (argument.name() === 'name' && name === 'new') {
        for (const value of values) checkedNewName(value);
      }
    });
    const nameOption = command.opts().name as unknown;
    if ((name === 'run' || name === 'new') && typeof nameOption === 'string') checkedNewName(nameOption, 'a sandbox name (--name)');
  });
}
