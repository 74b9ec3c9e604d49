// Workspace sync benchmark: Roost's S3 sync engine beside `aws s3 sync` (Debian's awscli 2.9),
// both against ONE s3rver on loopback in the same run, on the same tree: 1 GB in 6,000 files
// (ROOST_BENCH_S3_MB picks a smaller size for a quick run; the file count scales with it).
// Four figures each: full upload, a 1 MiB change, a no-op, restore. The targets (issue 21) are
// ratios against aws in this run: 1 MiB change ≥ 5× faster, no-op ≥ 10× faster, restore ≥ 2× the rate.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, openSync, rmSync, writeSync, closeSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startS3 } from '@roost/testkit';
import { SyncEngine, s3ConfigFromEnv } from '@roost/workspaces-s3';

const totalMb = Number(process.env.ROOST_BENCH_S3_MB ?? 1024);
const fileCount = Math.max(60, Math.round((6000 * totalMb) / 1024));
const aws = '/usr/bin/aws';
const MiB = 1024 * 1024;

const row = (label, value, note = '') => console.log(`${label.padEnd(40)} ${value.padStart(14)}   ${note}`);
const secs = (ms) => `${(ms / 1000).toFixed(2)} s`;
const rate = (bytes, ms) => `${(bytes / 1e6 / (ms / 1000)).toFixed(1)} MB/s`;

function run(cmd, args, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr = (stderr + chunk).slice(-4000)));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${stderr.trim()}`))));
  });
}

async function timed(fn) {
  const started = process.hrtime.bigint();
  const result = await fn();
  return { ms: Number(process.hrtime.bigint() - started) / 1e6, result };
}

/**
 * The tree: a few large files holding most of the bytes (as an installed toolchain or a dataset
 * does) and many small ones (sources, packages' files). Random bytes: nothing compresses.
 * 1.7% of the files hold 80% of the bytes; the rest average ~35 KB.
 */
function makeTree(root) {
  const largeCount = Math.max(1, Math.round(fileCount / 60));
  const largeBytes = Math.floor((totalMb * MiB * 0.8) / largeCount);
  const smallCount = fileCount - largeCount;
  const smallBytesTotal = totalMb * MiB - largeBytes * largeCount;
  let bytes = 0;
  const large = [];
  for (let i = 0; i < largeCount; i++) {
    const dir = join(root, 'large');
    mkdirSync(dir, { recursive: true });
    const path = join(dir, `blob-${i}.bin`);
    const fd = openSync(path, 'w');
    for (let written = 0; written < largeBytes; written += MiB) writeSync(fd, randomBytes(Math.min(MiB, largeBytes - written)));
    closeSync(fd);
    large.push(path);
    bytes += largeBytes;
  }
  for (let i = 0; i < smallCount; i++) {
    const dir = join(root, `src-${Math.floor(i / 100)}`);
    if (i % 100 === 0) mkdirSync(dir, { recursive: true });
    // Sizes spread 1x..3x around the mean, the last file taking up the rest.
    const mean = smallBytesTotal / smallCount;
    const size = i === smallCount - 1 ? Math.max(0, totalMb * MiB - bytes) : Math.floor(mean * (0.5 + ((i * 7919) % 1000) / 1000));
    writeFileSync(join(dir, `file-${i}.dat`), randomBytes(size));
    bytes += size;
  }
  return { bytes, large };
}

if (!(await import('node:fs')).existsSync(aws)) {
  console.log(`${aws} is missing: npm run bench installs Debian's awscli; skipping the workspace sync benchmark`);
  process.exit(0);
}

const work = mkdtempSync(join(tmpdir(), 'roost-bench-ws-'));
const s3 = await startS3({ bucket: 'bench' });
const env = { ...process.env, ...s3.env, AWS_PAGER: '', AWS_EC2_METADATA_DISABLED: 'true' };
const awsArgs = (...args) => ['--endpoint-url', s3.url, '--no-progress', '--only-show-errors', ...args];
let failed = false;
try {
  const tree = join(work, 'tree');
  const built = await timed(async () => makeTree(tree));
  const { bytes, large } = built.result;
  console.log(`tree: ${(bytes / 1e6).toFixed(0)} MB in ${fileCount} files (made in ${secs(built.ms)}); s3rver ${s3.url}`);

  const engine = new SyncEngine({
    store: s3ConfigFromEnv({ ...s3.env, ROOST_S3_PREFIX: 'engine' }),
    cacheDir: join(work, 'engine-cache'),
    keepSnapshots: 5,
  });

  // Full upload.
  const awsFull = await timed(() => run(aws, awsArgs('s3', 'sync', tree, `s3://${s3.bucket}/aws/`), env));
  const engineFull = await timed(() => engine.push(tree, 'bench'));

  // A 1 MiB change: 1 MiB overwritten in the middle of a large file.
  const change = () => {
    const fd = openSync(large[0], 'r+');
    writeSync(fd, randomBytes(MiB), 0, MiB, 3 * MiB);
    closeSync(fd);
  };
  change();
  const awsChange = await timed(() => run(aws, awsArgs('s3', 'sync', tree, `s3://${s3.bucket}/aws/`), env));
  const engineChange = await timed(() => engine.push(tree, 'bench'));

  // No-op.
  const awsNoop = await timed(() => run(aws, awsArgs('s3', 'sync', tree, `s3://${s3.bucket}/aws/`), env));
  const engineNoop = await timed(() => engine.push(tree, 'bench'));

  // Restore into an empty dir.
  const awsRestore = await timed(() => run(aws, awsArgs('s3', 'sync', `s3://${s3.bucket}/aws/`, join(work, 'aws-restored')), env));
  rmSync(join(work, 'aws-restored'), { recursive: true, force: true });
  const engineRestore = await timed(() => engine.restore('bench', join(work, 'engine-restored')));
  rmSync(join(work, 'engine-restored'), { recursive: true, force: true });
  engine.close();

  const check = (label, ratio, target) => {
    const ok = ratio >= target;
    failed ||= !ok;
    return `${ratio.toFixed(1)}× (target ≥ ${target}×) ${ok ? 'ok' : 'MISSED'}`;
  };
  console.log('');
  row('', 'roost engine', 'aws s3 sync (anchor, same run, same s3rver)   ratio');
  row('full upload', secs(engineFull.ms), `${secs(awsFull.ms)} (${rate(bytes, awsFull.ms)} vs ${rate(bytes, engineFull.ms)})   ${(awsFull.ms / engineFull.ms).toFixed(1)}× (no target)`);
  row('1 MiB change', secs(engineChange.ms), `${secs(awsChange.ms)}   ${check('change', awsChange.ms / engineChange.ms, 5)}`);
  row('no-op', secs(engineNoop.ms), `${secs(awsNoop.ms)}   ${check('noop', awsNoop.ms / engineNoop.ms, 10)}`);
  row('restore', rate(bytes, engineRestore.ms), `${rate(bytes, awsRestore.ms)} (${secs(engineRestore.ms)} vs ${secs(awsRestore.ms)})   ${check('restore', awsRestore.ms / engineRestore.ms, 2)}`);
  console.log(
    `engine detail: change sent ${(engineChange.result.uploadedBytes / MiB).toFixed(2)} MiB (${engineChange.result.hashedFiles} file read), ` +
      `no-op sent ${engineNoop.result.uploadedBytes} bytes, full sent ${(engineFull.result.uploadedBytes / 1e6).toFixed(0)} MB`,
  );
} finally {
  await s3.stop();
  rmSync(work, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
