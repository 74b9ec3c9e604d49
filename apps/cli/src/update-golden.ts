// `npm run golden`: rewrites the --help golden files and docs/cli.md from the built binary, and
// removes goldens of commands that no longer exist. Review the diff before committing it.
import { readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cliDocFile, goldenDir, goldenFile, helpCommands, helpText, renderCliDoc } from './golden.js';

const commands = helpCommands();
const wanted = new Set(commands.map(goldenFile));
for (const command of commands) {
  const result = helpText(command);
  if (result.status !== 0) throw new Error(`roost ${command} --help exited ${result.status}: ${result.stderr}`);
  writeFileSync(goldenFile(command), result.stdout);
}
for (const name of readdirSync(goldenDir)) {
  if (!wanted.has(`${goldenDir}${name}`)) rmSync(`${goldenDir}${name}`);
}
writeFileSync(cliDocFile, renderCliDoc(commands));
process.stderr.write(`wrote ${commands.length} golden help texts and docs/cli.md\n`);
