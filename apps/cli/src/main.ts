#!/usr/bin/env node
// `roost`: parses the command line, runs one command, maps failures to a message and an exit
// code (usage error 2, any other failure 1; run and exec exit with the command's own code).
import { type Command, CommanderError } from 'commander';
import { DaemonUnreachableError, NotRoostdError, RoostApiError } from '@roost/sdk';
import { buildProgram } from './commands.js';
import { cliEnv, defaultApiUrl } from './credentials.js';
import { ExitError, UsageError } from './output.js';

async function main(argv: string[]): Promise<number> {
  const program = buildProgram(cliEnv(process.env));
  // Every level of the tree: a nested command (`quota set`) would otherwise exit 1 by itself.
  const overrideExit = (command: Command): void => {
    command.exitOverride();
    command.commands.forEach(overrideExit);
  };
  overrideExit(program);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (error) {
    return report(error);
  }
}

function report(error: unknown): number {
  if (error instanceof ExitError) return error.exitCode;
  if (error instanceof CommanderError) {
    // Help and version are "errors" to commander; they already printed what they had to. Help
    // shown for a mistake (`roost` alone, a group without its subcommand) is a usage error.
    if (error.code === 'commander.helpDisplayed' || error.code === 'commander.help' || error.code === 'commander.version') {
      return error.exitCode === 0 ? 0 : 2;
    }
    return 2;
  }
  if (error instanceof UsageError) {
    process.stderr.write(`roost: ${error.message}\n`);
    return 2;
  }
  if (error instanceof DaemonUnreachableError) {
    process.stderr.write(
      `roost: cannot reach roostd at ${error.apiUrl}${whyUnreachable(error.cause)}: is it running? Start it with \`npm start\` in the Roost checkout (or \`npx roostd\`), or point ROOST_API_URL / \`roost login --url\` at it.\n`,
    );
    return 1;
  }
  if (error instanceof NotRoostdError) {
    process.stderr.write(
      `roost: ${error.message}: point ROOST_API_URL or \`roost login --url\` at roostd (default ${defaultApiUrl})\n`,
    );
    return 1;
  }
  if (error instanceof RoostApiError) {
    process.stderr.write(`roost: ${error.message} (${error.code})\n  hint: ${error.hint}\n`);
    return 1;
  }
  process.stderr.write(`roost: ${error instanceof Error ? error.message : String(error)}\n`);
  return 1;
}

/** What the connection attempt ran into, in words: " (connection refused)". */
function whyUnreachable(cause: unknown): string {
  const code = (cause as { code?: unknown })?.code ?? (cause as { cause?: { code?: unknown } })?.cause?.code;
  const words: Record<string, string> = {
    ECONNREFUSED: 'connection refused',
    ENOTFOUND: 'no such host',
    EAI_AGAIN: 'the host name did not resolve',
    ETIMEDOUT: 'timed out',
    EHOSTUNREACH: 'host unreachable',
    ENETUNREACH: 'network unreachable',
    ECONNRESET: 'the connection was reset',
  };
  return typeof code === 'string' ? ` (${words[code] ?? code})` : '';
}

// A reader that went away (`roost run … | head`) ends us the way SIGPIPE ends other tools;
// the daemon sees the connection close and kills the remote command.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(141);
    throw error;
  });
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
