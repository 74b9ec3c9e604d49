// Golden files for `roost --help` and each command's help: an interface change is a visible diff.
// This test only compares: `npm run golden` writes them (a missing golden fails here).
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { cliDocFile, goldenDir, goldenFile, helpCommands, helpText, renderCliDoc } from './golden.js';

const commands = helpCommands();

describe('roost --help golden files', () => {
  it('covers every command of the binary, and only those', () => {
    assert.ok(commands.includes('run') && commands.includes('ssh-key add'), `commands found: ${commands.join(', ')}`);
    const expected = commands.map(goldenFile).sort();
    const present = readdirSync(goldenDir).map((name) => `${goldenDir}${name}`).sort();
    assert.deepEqual(present, expected, 'golden files and commands differ: run `npm run golden` and review the diff');
  });

  for (const command of commands) {
    it(`roost ${command} --help`.replace('  ', ' '), () => {
      const result = helpText(command);
      assert.equal(result.status, 0, result.stderr);
      assert.match(result.stdout, /--json|--help/);
      const file = goldenFile(command);
      assert.ok(existsSync(file), `no golden for "roost ${command} --help": run \`npm run golden\` and review the diff`);
      assert.equal(result.stdout, readFileSync(file, 'utf8'), `help of "${command}" changed: run \`npm run golden\` if intended`);
    });
  }

  it('docs/cli.md matches the help texts', () => {
    assert.equal(readFileSync(cliDocFile, 'utf8'), renderCliDoc(commands), 'docs/cli.md is stale: run `npm run golden`');
  });
});
