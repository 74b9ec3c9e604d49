// Golden files for `roost --help` and each command's help: an interface change is a visible diff.
// Regenerate with UPDATE_GOLDEN=1 npm test -- help.test
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';

const cli = fileURLToPath(new URL('./main.js', import.meta.url));
const goldenDir = fileURLToPath(new URL('../golden/', import.meta.url));
const cliDoc = fileURLToPath(new URL('../../../docs/cli.md', import.meta.url));
const commands = [
  '', 'login', 'logout', 'whoami', 'run', 'new', 'exec', 'list', 'ls', 'status', 'logs', 'stop', 'rm', 'doctor',
  'set', 'ssh', 'ssh-config', 'proxy', 'ssh-key', 'ssh-key add', 'ssh-key list', 'ssh-key rm', 'quota', 'quota set',
];
const goldenName = (command: string) => (command || 'roost').replace(' ', '-');

/** docs/cli.md is every help text in order, so the reference cannot drift from the binary. */
function renderCliDoc(): string {
  const sections = commands.map((command) => {
    const text = readFileSync(`${goldenDir}${goldenName(command)}.txt`, 'utf8');
    return `## roost${command ? ` ${command}` : ''}\n\n\`\`\`\n${text.trimEnd()}\n\`\`\`\n`;
  });
  return `# roost CLI reference\n\nGenerated from \`roost <command> --help\` by apps/cli/src/help.test.ts (UPDATE_GOLDEN=1).\n\n${sections.join('\n')}`;
}

describe('roost --help golden files', () => {
  for (const command of commands) {
    it(`roost ${command} --help`.replace('  ', ' '), () => {
      const args = command ? [...command.split(' '), '--help'] : ['--help'];
      const result = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { PATH: process.env.PATH, HOME: '/nonexistent', COLUMNS: '100' } });
      assert.equal(result.status, 0, result.stderr);
      assert.match(result.stdout, /--json|--help/);
      const file = `${goldenDir}${goldenName(command)}.txt`;
      if (process.env.UPDATE_GOLDEN || !existsSync(file)) writeFileSync(file, result.stdout);
      assert.equal(result.stdout, readFileSync(file, 'utf8'), `help of "${command}" changed: rerun with UPDATE_GOLDEN=1 if intended`);
    });
  }

  it('docs/cli.md matches the help texts', () => {
    if (process.env.UPDATE_GOLDEN || !existsSync(cliDoc)) writeFileSync(cliDoc, renderCliDoc());
    assert.equal(readFileSync(cliDoc, 'utf8'), renderCliDoc(), 'docs/cli.md is stale: rerun with UPDATE_GOLDEN=1');
  });
});
