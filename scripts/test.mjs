// `npm test`: set up what is missing, then run every test file with node's test runner.
// Test files are compiled next to their sources (src/x.test.ts → dist/x.test.js).
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { repoRoot, setup, step } from './setup.mjs';

await setup({ why: 'npm test (the tests start real sandboxes)' });

function findTests(dir) {
  const found = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name === 'node_modules' || entry.name.startsWith('.')) continue;
    const full = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...findTests(full));
    else if (entry.name.endsWith('.test.js') && full.includes(`${'/dist/'}`)) found.push(full);
  }
  return found;
}

const filter = process.argv.slice(2);
const files = findTests(repoRoot)
  .map((file) => relative(repoRoot, file))
  .filter((file) => filter.length === 0 || filter.some((word) => file.includes(word)))
  .sort();
step(`running ${files.length} test files`);
// One file at a time: end-to-end files start daemons and sandboxes, and this box has 2 cores.
const result = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...files], { cwd: repoRoot, stdio: 'inherit' });
process.exit(result.status ?? 1);
