// Every command a hint names exists: the error table's hints, the CLI's own messages and help,
// the SDK's docs and the README are searched for `roost <command> [<subcommand>]`, and each is
// looked up in the CLI's real command tree (buildProgram), so commands added or renamed later
// are checked the same way.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import type { Command } from 'commander';
import { errorCodes } from '@roost/contract/errors';
import { buildProgram } from './commands.js';
import { cliEnv } from './credentials.js';

const repo = new URL('../../../', import.meta.url);

/** Non-test TypeScript sources of a folder of the repo. */
function sources(folder: string): { file: string; text: string }[] {
  const dir = new URL(folder, repo);
  return readdirSync(dir)
    .filter((name) => name.endsWith('.ts') && !name.endsWith('.test.ts'))
    .map((name) => ({ file: `${folder}${name}`, text: readFileSync(new URL(name, dir), 'utf8') }));
}

/** `roost word [word]` as written in prose, help texts and code strings (not `roostd`, not `roost-dev`). */
export function mentionedCommands(text: string): string[][] {
  return [...text.matchAll(/(?<![\w-])roost ([a-z][a-z0-9-]*)(?: ([a-z][a-z0-9-]*))?/g)].map((match) => match.slice(1).filter(Boolean));
}

/** Why `words` do not name a command of the tree, or undefined when they do. */
export function missingCommand(program: Command, words: string[]): string | undefined {
  const [first, second] = words;
  const command = program.commands.find((c) => c.name() === first || c.aliases().includes(first!));
  if (!command) return `there is no command "roost ${first}"`;
  // `roost quota bob` passes an argument; `roost ssh-key frob` names a subcommand that must exist.
  const takesArguments = command.registeredArguments.length > 0;
  if (second !== undefined && command.commands.length > 0 && !takesArguments) {
    if (!command.commands.some((c) => c.name() === second || c.aliases().includes(second))) return `"roost ${first}" has no subcommand "${second}"`;
  }
  return undefined;
}

describe('hints name commands that exist', () => {
  const program = buildProgram(cliEnv({ HOME: '/nonexistent' }));

  it('finds mentions the way they are written, and tells a missing command from an argument', () => {
    assert.deepEqual(mentionedCommands('run `roost ls`, then roost quota set bob; roostd, roost-dev, npx roost ssh-key add'), [
      ['ls'],
      ['quota', 'set'],
      ['ssh-key', 'add'],
    ]);
    assert.equal(missingCommand(program, ['quota', 'bob']), undefined);
    assert.equal(missingCommand(program, ['exec', 'dev']), undefined);
    assert.match(missingCommand(program, ['token', 'create']) ?? '', /no command "roost token"/);
    assert.match(missingCommand(program, ['ssh-key', 'frob']) ?? '', /no subcommand "frob"/);
  });

  it('every hint of the error table', () => {
    const mentions = Object.entries(errorCodes).flatMap(([code, spec]) => mentionedCommands(spec.hint).map((words) => ({ code, words })));
    assert.ok(mentions.length >= 5, `the hints name commands (found ${mentions.length})`);
    const wrong = mentions.flatMap(({ code, words }) => {
      const why = missingCommand(program, words);
      return why ? [`${code}: ${why}`] : [];
    });
    assert.deepEqual(wrong, []);
  });

  it("every message and help text of the CLI, the SDK's docs and the README", () => {
    const files = [
      ...sources('apps/cli/src/'),
      ...sources('packages/sdk/src/'),
      { file: 'README.md', text: readFileSync(new URL('README.md', repo), 'utf8') },
    ];
    let mentions = 0;
    const wrong = files.flatMap(({ file, text }) =>
      mentionedCommands(text).flatMap((words) => {
        mentions += 1;
        const why = missingCommand(program, words);
        return why ? [`${file}: ${why}`] : [];
      }),
    );
    assert.ok(mentions >= 30, `the sources name commands (found ${mentions})`);
    assert.deepEqual([...new Set(wrong)], []);
  });
});
