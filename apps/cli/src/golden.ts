// The `--help` golden files (apps/cli/golden/) and docs/cli.md, made from the real binary.
// Written only by `npm run golden` (update-golden.ts); help.test.ts only compares, so a missing
// or stale golden fails the test instead of being written by it.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { buildProgram } from './commands.js';
import { cliEnv } from './credentials.js';

export const goldenDir = fileURLToPath(new URL('../golden/', import.meta.url));
export const cliDocFile = fileURLToPath(new URL('../../../docs/cli.md', import.meta.url));
const cli = fileURLToPath(new URL('./main.js', import.meta.url));

/** Every command and subcommand the binary has, as words ('' is `roost` itself), in program order. */
export function helpCommands(): string[] {
  const found = [''];
  const walk = (command: Command, prefix: string[]) => {
    for (const sub of command.commands) {
      const words = [...prefix, sub.name()];
      found.push(words.join(' '));
      walk(sub, words);
    }
  };
  walk(buildProgram(cliEnv({ HOME: '/nonexistent' })), []);
  return found;
}

export const goldenFile = (command: string) => `${goldenDir}${(command || 'roost').replaceAll(' ', '-')}.txt`;

/** `roost <command> --help` as a user sees it, in a fixed terminal width and without config. */
export function helpText(command: string): { status: number | null; stdout: string; stderr: string } {
  const args = command ? [...command.split(' '), '--help'] : ['--help'];
  return spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { PATH: process.env.PATH, HOME: '/nonexistent', COLUMNS: '100' } });
}

/** docs/cli.md is every golden help text in order, so the reference cannot drift from the binary. */
export function renderCliDoc(commands: string[]): string {
  const sections = commands.map((command) => {
    const text = readFileSync(goldenFile(command), 'utf8');
    return `## roost${command ? ` ${command}` : ''}\n\n\`\`\`\n${text.trimEnd()}\n\`\`\`\n`;
  });
  return `# roost CLI reference\n\nGenerated from \`roost <command> --help\` by \`npm run golden\` (apps/cli/src/update-golden.ts).\n\n${sections.join('\n')}`;
}
