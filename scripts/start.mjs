// `npm start`: set up what is missing, then run roostd in the foreground until Ctrl-C.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot, setup, step } from './setup.mjs';

await setup({ why: 'npm start' });
step('starting roostd (Ctrl-C stops it)');
const daemon = spawn(process.execPath, [join(repoRoot, 'apps', 'roostd', 'dist', 'main.js')], { stdio: 'inherit' });
// Ctrl-C on a terminal reaches roostd directly (same process group); a signal sent to this
// process alone is passed on. Either way we wait for roostd to finish stopping.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    if (!process.stdin.isTTY) daemon.kill(signal);
  });
}
daemon.on('close', (code, signal) => process.exit(code ?? (signal ? 0 : 1)));
