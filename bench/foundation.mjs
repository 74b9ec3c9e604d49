// Foundation benchmark: create-to-ready and `roost run true` end to end, cold and from the warm
// pool, and exec overhead, each printed beside the bare runtime measured in the same run and
// the anchor.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createImageStore, SHIFT_BASE } from '@roost/runtime-oci';
import { cliPath, startDaemon } from '@roost/testkit';

const rounds = Number(process.env.ROOST_BENCH_ROUNDS ?? 30);

function percentile(samples, p) {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function measure(label, fn) {
  const samples = [];
  for (let i = 0; i < rounds + 3; i++) {
    const started = process.hrtime.bigint();
    await fn(i);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    if (i >= 3) samples.push(ms); // the first rounds warm caches
  }
  return { label, p50: percentile(samples, 50), p90: percentile(samples, 90) };
}

const print = (row, anchor) =>
  console.log(`${row.label.padEnd(44)} p50 ${row.p50.toFixed(1).padStart(7)} ms   p90 ${row.p90.toFixed(1).padStart(7)} ms   ${anchor}`);

/** create-to-ready: the API call until a command can run, then remove (and `between`, untimed). */
async function measureCreate(daemon, label, anchor, between = async () => {}) {
  const samples = [];
  for (let i = 0; i < rounds; i++) {
    const started = process.hrtime.bigint();
    const sandbox = await daemon.sdk.sandboxes.create({ name: `bench-ready-${i}` });
    samples.push(Number(process.hrtime.bigint() - started) / 1e6);
    await sandbox.remove();
    await between();
  }
  print({ label, p50: percentile(samples, 50), p90: percentile(samples, 90) }, anchor);
}

/** `roost run true` as a user runs it: a CLI process of its own. */
async function measureRunTrue(daemon, label, anchor, before = async () => {}) {
  const env = { PATH: process.env.PATH, HOME: '/tmp', ROOST_API_URL: daemon.url, ROOST_API_TOKEN: daemon.adminToken };
  // Asynchronous: the daemon answers from this very process, so a spawnSync would deadlock.
  const row = await measure(label, async () => {
    await before();
    const code = await new Promise((resolve) => spawn(process.execPath, [cliPath, 'run', 'true'], { env, stdio: 'ignore' }).on('close', resolve));
    if (code !== 0) throw new Error(`roost run true exited ${code}`);
  });
  print(row, anchor);
}

const daemon = await startDaemon({ driver: 'oci' });
try {
  const health = await daemon.sdk.health();
  const [engineName] = health.runtime.split(' ');
  const engineBin = engineName === 'crun' ? 'crun' : 'runc';
  const stateRoot = join(daemon.dataDir, 'runtime', 'oci-state');
  console.log(`Roost foundation benchmark — ${rounds} rounds each, runtime ${health.runtime}, node ${process.version}\n`);

  await measureCreate(daemon, 'create-to-ready (API call until exec can run)', 'target ≤ 100 ms (no pool)');
  await measureRunTrue(daemon, '`roost run true` end to end (CLI process)', 'target ≤ 250 ms; anchors: hosted microVM ~300 ms warm, Docker-based ~1 s');

  const nodeStart = await measure('bare `node -e 0` (CLI floor, for reference)', () => {
    spawnSync(process.execPath, ['-e', '0']);
  });
  print(nodeStart, '');

  const box = await daemon.sdk.sandboxes.create({ name: 'bench-exec' });
  // The bare engine in the same run: `run -d` (create + start) of a bundle made from the same
  // config, on the image's rootfs read-only, without overlay or network, then `delete -f`.
  const bareBundle = mkdtempSync(join(tmpdir(), 'roost-bench-bare-'));
  try {
    const config = JSON.parse(readFileSync(join(daemon.dataDir, 'runtime', 'sandboxes', box.id, 'config.json'), 'utf8'));
    const silent = { info() {}, warn() {}, error() {}, debug() {} };
    const lower = await createImageStore({ cacheDir: daemon.daemon.config.imageCacheDir, logger: silent }).resolve('debian');
    config.root = { path: lower, readonly: true };
    // The image on disk is owned by SHIFT_BASE+k; without the sandbox's idmapped mount, map to that.
    for (const mappings of [config.linux.uidMappings, config.linux.gidMappings]) mappings[0].hostID = SHIFT_BASE;
    config.mounts = config.mounts.filter((mount) => !mount.source.startsWith(daemon.dataDir));
    config.linux.namespaces = config.linux.namespaces.filter((ns) => ns.type !== 'network');
    delete config.linux.sysctl;
    writeFileSync(join(bareBundle, 'config.json'), JSON.stringify(config));
    const bareCreate = await measure(`bare \`${engineBin} run -d\` + delete (no overlay, no net)`, (i) => {
      const id = `bench-bare-${i}`;
      config.linux.cgroupsPath = `/roost/${id}`;
      writeFileSync(join(bareBundle, 'config.json'), JSON.stringify(config));
      // The detached init inherits the engine's stdio: a pipe would never close. A file.
      const errFd = openSync(join(bareBundle, 'run.err'), 'w');
      const run = spawnSync(engineBin, ['--root', stateRoot, 'run', '-d', '--bundle', bareBundle, id], { stdio: ['ignore', 'ignore', errFd] });
      closeSync(errFd);
      if (run.status !== 0) throw new Error(`${engineBin} run failed: ${readFileSync(join(bareBundle, 'run.err'), 'utf8')}`);
      spawnSync(engineBin, ['--root', stateRoot, 'delete', '-f', id]);
    });
    print(bareCreate, 'the engine alone, for the create-to-ready figures');
  } finally {
    rmSync(bareBundle, { recursive: true, force: true });
  }
  const bare = await measure(`bare \`${engineBin} exec <id> true\``, () => {
    const result = spawnSync(engineBin, ['--root', stateRoot, 'exec', box.id, 'true']);
    if (result.status !== 0) throw new Error(`${engineBin} exec failed: ${result.stderr}`);
  });
  print(bare, 'the runtime alone');
  const viaApi = await measure('SDK exec true (HTTP + driver)', async () => {
    const { exitCode } = await box.exec(['true']).wait();
    if (exitCode !== 0) throw new Error('exec true failed');
  });
  print(viaApi, '');
  console.log(`${'exec overhead over bare runtime'.padEnd(44)} p50 ${(viaApi.p50 - bare.p50).toFixed(1).padStart(7)} ms   target ≤ 10 ms`);
  await box.remove();
} finally {
  await daemon.close();
}

// The same with a warm pool; each round waits until the pool is full again, as it is when
// requests do not outrun the refill.
const pooled = await startDaemon({ driver: 'oci', config: { pool: { size: 4, memoryShare: 0.5 } } });
try {
  const pool = pooled.daemon.pool;
  console.log(`\nwith a warm pool of ${pool.stats()[0].target}:`);
  await pool.filled();
  await measureCreate(pooled, 'create-to-ready from the pool', 'target ≤ 30 ms; anchor: Firecracker-based service ~150 ms', () => pool.filled());
  await measureRunTrue(pooled, '`roost run true` from the pool (CLI process)', 'target ≤ 150 ms; anchors: hosted microVM ~300 ms warm, Docker-based ~1 s', () => pool.filled());
} finally {
  await pooled.close();
}
