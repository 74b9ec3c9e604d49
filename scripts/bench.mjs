// `npm run bench`: set up what is missing, then run the benchmarks and print their figures.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ensureDebianPackages, repoRoot, setup, step } from './setup.mjs';

await setup({ why: 'npm run bench (it starts real sandboxes)' });
// The anchors the figures are compared with, measured in the same run (never started as services).
await ensureDebianPackages([
  { name: 'openssh-server', present: '/usr/sbin/sshd' },
  // `aws s3 sync`, the anchor of the workspace sync figures (Debian's aws-cli 2.9).
  { name: 'awscli', present: '/usr/bin/aws' },
]);
let failed = false;
for (const [name, file] of [
  ['foundation: speed', 'foundation.mjs'],
  ['scale: idle sandboxes', 'scale.mjs'],
  ['ssh: gateway latency and scp throughput', 'ssh.mjs'],
  ['leaks: create/remove cycles', 'leaks.mjs'],
  ['workspaces: S3 sync beside aws s3 sync', 'workspaces-s3.mjs'],
]) {
  step(`benchmark: ${name}`);
  const result = spawnSync(process.execPath, [join(repoRoot, 'bench', file)], { cwd: repoRoot, stdio: 'inherit' });
  failed ||= result.status !== 0;
}
process.exit(failed ? 1 : 0);
