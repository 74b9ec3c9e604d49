// `npm run bench`: set up what is missing, then run the benchmarks and print their figures.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot, setup, step } from './setup.mjs';

await setup({ why: 'npm run bench (it starts real sandboxes)' });
step('benchmark: foundation');
const result = spawnSync(process.execPath, [join(repoRoot, 'bench', 'foundation.mjs')], { cwd: repoRoot, stdio: 'inherit' });
process.exit(result.status ?? 1);
