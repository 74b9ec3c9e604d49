// 1,000 create/remove cycles (ROOST_BENCH_CYCLES to change), then the host's counts of mounts,
// network namespaces, veth links, cgroups, processes and data-dir files must be back where they
// started. Prints the counts side by side and exits 1 on any difference.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemon } from '@roost/testkit';

const cycles = Number(process.env.ROOST_BENCH_CYCLES ?? 1000);

function countFiles(dir) {
  let count = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    count += 1;
    if (entry.isDirectory()) count += countFiles(join(dir, entry.name));
  }
  return count;
}

function cgroupCount() {
  let count = 0;
  for (const hierarchy of ['', ...readdirSync('/sys/fs/cgroup')]) {
    try {
      count += readdirSync(join('/sys/fs/cgroup', hierarchy, 'roost'), { withFileTypes: true }).filter((e) => e.isDirectory()).length;
    } catch {
      // no roost parent in this hierarchy
    }
  }
  return count;
}

function snapshot(dataDir) {
  return {
    mounts: readFileSync('/proc/self/mounts', 'utf8').split('\n').filter(Boolean).length,
    netns: new Set(readdirSync('/proc').filter((p) => /^\d+$/.test(p)).map((p) => {
      try {
        return statSync(`/proc/${p}/ns/net`).ino;
      } catch {
        return undefined;
      }
    }).filter(Boolean)).size,
    veths: readdirSync('/sys/class/net').filter((link) => link.startsWith('rv')).length,
    cgroups: cgroupCount(),
    processes: readdirSync('/proc').filter((p) => /^\d+$/.test(p)).length,
    dataDirFiles: countFiles(join(dataDir, 'runtime')),
  };
}

const daemon = await startDaemon({ driver: 'oci' });
let leaked = false;
try {
  const before = snapshot(daemon.dataDir);
  const started = Date.now();
  for (let i = 0; i < cycles; i++) {
    const sandbox = await daemon.sdk.sandboxes.create({ name: `cycle-${i}` });
    await sandbox.remove();
    if (process.stderr.isTTY && i % 50 === 0) process.stderr.write(`\r  ${i}/${cycles} cycles`);
  }
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  const seconds = (Date.now() - started) / 1000;
  // veth removal is asynchronous in the kernel (1-2 s): give it time before counting.
  await new Promise((resolve) => setTimeout(resolve, 3000));
  const afterCycles = snapshot(daemon.dataDir);
  console.log(`${cycles} create/remove cycles in ${seconds.toFixed(1)} s (${((seconds * 1000) / cycles).toFixed(1)} ms per cycle)`);
  console.log(`${'resource'.padEnd(14)}${'before'.padStart(8)}${'after'.padStart(8)}`);
  for (const key of Object.keys(before)) {
    const same = before[key] === afterCycles[key];
    // Other processes on the host come and go; only the sandbox objects must match exactly.
    const strict = key !== 'processes';
    if (strict && !same) leaked = true;
    console.log(`${key.padEnd(14)}${String(before[key]).padStart(8)}${String(afterCycles[key]).padStart(8)}${same ? '' : strict ? '   LEAK' : '   (host noise)'}`);
  }
} finally {
  await daemon.close();
}
process.exit(leaked ? 1 : 0);
