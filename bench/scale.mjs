// Scale benchmark: N idle persistent sandboxes at once (default 200). Prints the daemon's RSS
// beside its target, the host memory each idle sandbox costs (MemAvailable before and after,
// and the sum of the sandboxes' own cgroup memory), and that an exec still answers promptly.
import { readFileSync } from 'node:fs';
import { readInstance, startDaemon } from '@roost/testkit';

const count = Number(process.env.ROOST_BENCH_SANDBOXES ?? 200);
const parallel = 8;

const memAvailableKb = () => Number(/^MemAvailable:\s+(\d+)/m.exec(readFileSync('/proc/meminfo', 'utf8'))[1]);
const rssMb = () => Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'))[1]) / 1024;

/** The memory the sandbox's cgroup (under the daemon's instance parent) is charged with (v1 or v2), in bytes. */
function cgroupMemory(parent, id) {
  for (const file of [`/sys/fs/cgroup/memory/${parent}/${id}/memory.usage_in_bytes`, `/sys/fs/cgroup/${parent}/${id}/memory.current`]) {
    try {
      return Number(readFileSync(file, 'utf8').trim());
    } catch {
      // the other hierarchy
    }
  }
  return 0;
}

// The default quota (20 live sandboxes per user) would stop the admin at 20: raise it to the count.
const daemon = await startDaemon({
  driver: 'oci',
  config: { quota: { sandboxes: count, cpus: count, memoryMb: count * 1024, pids: count * 1024 } },
});
try {
  const health = await daemon.sdk.health();
  console.log(`Roost scale benchmark — ${count} idle sandboxes, runtime ${health.runtime}, node ${process.version}\n`);
  global.gc?.();
  const rssBefore = rssMb();
  const availableBefore = memAvailableKb();
  const started = Date.now();
  const sandboxes = [];
  for (let i = 0; i < count; i += parallel) {
    const batch = Array.from({ length: Math.min(parallel, count - i) }, (_, j) => daemon.sdk.sandboxes.create({ name: `idle-${i + j}` }));
    sandboxes.push(...(await Promise.all(batch)));
    if ((i + parallel) % 40 === 0) process.stderr.write(`  ${sandboxes.length}/${count} running\n`);
  }
  const createSeconds = (Date.now() - started) / 1000;
  await new Promise((resolve) => setTimeout(resolve, 2000)); // let page cache and slab settle
  const availableAfter = memAvailableKb();
  const rssAfter = rssMb();
  const { cgroupParent } = readInstance(`${daemon.dataDir}/runtime`);
  const cgroupTotal = sandboxes.reduce((sum, sandbox) => sum + cgroupMemory(cgroupParent, sandbox.id), 0);

  const execStarted = process.hrtime.bigint();
  const { exitCode } = await sandboxes[sandboxes.length - 1].exec(['true']).wait();
  const execMs = Number(process.hrtime.bigint() - execStarted) / 1e6;
  if (exitCode !== 0) throw new Error('exec in the last sandbox failed');
  const listed = (await daemon.sdk.sandboxes.list()).length;

  const row = (label, value, note = '') => console.log(`${label.padEnd(52)} ${value.padStart(12)}   ${note}`);
  row(`${count} sandboxes created`, `${createSeconds.toFixed(1)} s`, `${((createSeconds * 1000) / count).toFixed(0)} ms each, ${parallel} at a time`);
  row('sandboxes the API lists as running', String(listed), `expected ${count}`);
  row('daemon RSS (roostd, in this process) with them', `${rssAfter.toFixed(0)} MB`, `target ≤ 300 MB (was ${rssBefore.toFixed(0)} MB with none)`);
  row('host memory per idle sandbox (MemAvailable drop)', `${((availableBefore - availableAfter) / count / 1024).toFixed(2)} MB`, 'includes kernel objects: netns, veth, overlay, cgroups');
  row("per idle sandbox, its own cgroup's charge", `${(cgroupTotal / count / 1024 / 1024).toFixed(2)} MB`, 'what the sandbox itself uses');
  row(`exec true in sandbox #${count} with all of them up`, `${execMs.toFixed(1)} ms`, '');
  if (listed !== count) throw new Error(`expected ${count} running sandboxes, the API lists ${listed}`);
} finally {
  const started = Date.now();
  await daemon.close();
  console.log(`\nremoved them all in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}
