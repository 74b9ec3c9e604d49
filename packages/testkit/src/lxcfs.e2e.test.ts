// What `free`, /proc/cpuinfo and uptime show inside a sandbox: its own limits through LXCFS views,
// on crun and on runc, from a warm-pool member too; doctor when lxcfs is missing or died; an own
// lxcfs that outlives a roostd restart and is gone after the last close.
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { runCli } from './cli.js';
import { startDaemon, type TestDaemon } from './start-daemon.js';
import { waitFor } from './wait.js';

/** The numbers a user reads off `free -m`, `nproc` and friends, from one exec. */
const PROBE = [
  "free -m | awk '/^Mem:/ {print \"free_total_mb=\" $2}'",
  'echo cpuinfo_processors=$(grep -c ^processor /proc/cpuinfo)',
  'echo cpu_online=$(cat /sys/devices/system/cpu/online)',
  'echo getconf_cpus=$(getconf _NPROCESSORS_ONLN)',
  'echo nproc=$(nproc)',
  'echo python_cpus=$(python3 -c "import os; print(os.cpu_count())")',
  "echo uptime_s=$(cut -d' ' -f1 /proc/uptime)",
  "echo memtotal_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)",
].join('; ');

function parse(stdout: string): Record<string, string> {
  return Object.fromEntries(stdout.trim().split('\n').map((line) => line.split('=', 2) as [string, string]));
}

const hostUptimeS = () => Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
const hostMemTotalKb = () => /^MemTotal:\s+(\d+)/m.exec(readFileSync('/proc/meminfo', 'utf8'))![1]!;

function cli(d: TestDaemon) {
  const env = { ROOST_API_URL: d.url, ROOST_API_TOKEN: d.adminToken };
  return (...args: string[]) => runCli(args, { env });
}

/** The lxcfs this daemon started: its pid, or undefined when it runs none. */
function ownLxcfsPid(d: TestDaemon): number | undefined {
  const pidFile = join(d.dataDir, 'runtime', 'lxcfs.pid');
  if (!existsSync(pidFile)) return undefined;
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  return pid > 0 && isLxcfs(pid) ? pid : undefined;
}

function isLxcfs(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0]!.endsWith('lxcfs');
  } catch {
    return false;
  }
}

const lxcfsMountsUnder = (dir: string) =>
  readFileSync('/proc/self/mounts', 'utf8').split('\n').filter((l) => l.split(' ')[2] === 'fuse.lxcfs' && l.split(' ')[1]!.startsWith(dir));

for (const engine of ['crun', 'runc'] as const) {
  describe(`sandbox /proc views through lxcfs (${engine})`, () => {
    let d: TestDaemon;
    let roost: ReturnType<typeof cli>;
    let dataDir = '';
    before(async () => {
      // runc mounts the rootfs as the sandbox's root: mkdtemp's 0700 (and the data dir's) would
      // stop it at the door, so the data dir is made beforehand, searchable.
      const top = mkdtempSync(join(tmpdir(), 'roost-lxcfs-'));
      chmodSync(top, 0o711);
      mkdirSync(join(top, 'data'), { mode: 0o711 });
      // One pool member, so a claimed (configured) sandbox is checked as well as a fresh one.
      d = await startDaemon({ driver: 'oci', dataDir: join(top, 'data'), config: { runtime: engine, pool: { size: 1 } } });
      dataDir = d.dataDir;
      roost = cli(d);
    });
    after(async () => {
      const pid = d && ownLxcfsPid(d);
      await d?.close();
      // Nothing of lxcfs is left after the last close: no mount, no process.
      assert.deepEqual(lxcfsMountsUnder(dataDir), []);
      if (pid) assert.equal(isLxcfs(pid), false, `lxcfs ${pid} still runs after close`);
    });

    it('free, /proc/cpuinfo, cpu/online and uptime show the limits of `new --memory 256 --cpus 1`', async () => {
      assert.ok(d.daemon.pool);
      await d.daemon.pool.filled();
      const made = await roost('new', '--memory', '256', '--cpus', '1', 'small');
      assert.equal(made.exitCode, 0, made.stderr);
      const pooled = await roost('exec', 'small', PROBE);
      assert.equal(pooled.exitCode, 0, pooled.stderr);
      // The pool is empty now: this one is made fresh.
      const made2 = await roost('new', '--memory', '256', '--cpus', '1', 'small2');
      assert.equal(made2.exitCode, 0, made2.stderr);
      const fresh = await roost('exec', 'small2', PROBE);
      assert.equal(fresh.exitCode, 0, fresh.stderr);
      for (const [which, out] of [['pool member', pooled.stdout], ['fresh', fresh.stdout]] as const) {
        const v = parse(out);
        assert.equal(v.memtotal_kb, String(256 * 1024), `${which}: MemTotal is the memory limit (${out})`);
        assert.ok(Number(v.free_total_mb) >= 250 && Number(v.free_total_mb) <= 256, `${which}: free -m total ${v.free_total_mb}`);
        assert.equal(v.cpuinfo_processors, '1', `${which}: /proc/cpuinfo lists the CPUs of --cpus`);
        assert.equal(v.cpu_online, '0', `${which}: /sys/devices/system/cpu/online`);
        assert.equal(v.getconf_cpus, '1', `${which}: sysconf(_SC_NPROCESSORS_ONLN) reads cpu/online`);
        assert.equal(v.python_cpus, '1', `${which}: Python's os.cpu_count()`);
        // Decided and documented (docs/runtime-oci.md): no cpuset pinning, so nproc
        // (sched_getaffinity) counts the host's CPUs.
        assert.equal(v.nproc, String(availableParallelism()), `${which}: nproc`);
        assert.ok(Number(v.uptime_s) < 60, `${which}: uptime starts near 0, got ${v.uptime_s}`);
        assert.ok(hostUptimeS() - Number(v.uptime_s) > 5, `${which}: the sandbox's uptime (${v.uptime_s}) is not the host's (${hostUptimeS()})`);
      }
    });

    it('the views are read-only', async () => {
      const write = await roost('exec', 'small', 'echo 1 > /proc/meminfo && echo wrote; mount -o remount,rw /proc/meminfo 2>&1 || echo refused');
      assert.doesNotMatch(write.stdout, /wrote/);
      assert.match(write.stdout, /refused/);
      assert.equal((await roost('doctor', '--json')).exitCode, 0, 'doctor finds nothing wrong');
    });
  });
}

describe('lxcfs missing: doctor says so and sandboxes still start', () => {
  let d: TestDaemon;
  const notAMount = mkdtempSync(join(tmpdir(), 'roost-not-lxcfs-'));
  before(async () => {
    d = await startDaemon({ driver: 'oci', config: { lxcfs: { binary: '/nonexistent/lxcfs', hostDir: notAMount } } });
  });
  after(async () => {
    await d?.close();
    rmSync(notAMount, { recursive: true, force: true });
  });

  it('reports the missing lxcfs with its fix, and a new sandbox sees the host /proc', async () => {
    const roost = cli(d);
    const doctor = await roost('doctor', '--json');
    assert.equal(doctor.exitCode, 1);
    const report = JSON.parse(doctor.stdout) as { healthy: boolean; problems: { problem: string; fix: string }[]; leftovers: unknown[] };
    assert.equal(report.healthy, false);
    const lxcfs = report.problems.find((p) => p.problem.includes('lxcfs'));
    assert.ok(lxcfs, doctor.stdout);
    assert.match(lxcfs.problem, /not installed.*\/nonexistent\/lxcfs.*not an lxcfs mount/);
    assert.match(lxcfs.fix, /apt-get install -y lxcfs/);
    const text = await roost('doctor');
    assert.match(text.stdout, /lxcfs is not installed/);

    assert.equal((await roost('new', '--memory', '256', 'plain')).exitCode, 0);
    const probe = parse((await roost('exec', 'plain', PROBE)).stdout);
    assert.equal(probe.memtotal_kb, hostMemTotalKb(), 'without lxcfs MemTotal is the host\'s');
    assert.equal(ownLxcfsPid(d), undefined);
  });
});

describe("a host's own lxcfs: roostd uses it and leaves it alone", () => {
  let d: TestDaemon | undefined;
  const hostDir = mkdtempSync(join(tmpdir(), 'roost-host-lxcfs-'));
  let hostLxcfs: ChildProcess | undefined;
  before(async () => {
    // Stands in for Debian's lxcfs service (/var/lib/lxcfs), which nothing starts on this host.
    hostLxcfs = spawn('/usr/bin/lxcfs', ['--foreground', '--enable-cfs', '--pidfile', join(hostDir, '..', `${hostDir.split('/').pop()}.pid`), hostDir], { stdio: 'ignore' });
    await waitFor(() => lxcfsMountsUnder(hostDir).length === 1, 'the host lxcfs to mount');
  });
  after(async () => {
    try {
      await d?.close();
    } finally {
      spawnSync('umount', [hostDir]);
      if (hostLxcfs && hostLxcfs.exitCode === null) {
        hostLxcfs.kill('SIGKILL');
        await new Promise((resolve) => hostLxcfs!.once('exit', resolve));
      }
      rmSync(`${hostDir}.pid`, { force: true });
      rmSync(hostDir, { recursive: true, force: true });
    }
  });

  it('gives sandboxes views from the host mount, starts none of its own, and leaves it mounted at close', async () => {
    d = await startDaemon({ driver: 'oci', config: { lxcfs: { hostDir } } });
    const roost = cli(d);
    assert.equal((await roost('new', '--memory', '256', 'viewer')).exitCode, 0);
    assert.equal(parse((await roost('exec', 'viewer', PROBE)).stdout).memtotal_kb, String(256 * 1024));
    assert.equal(ownLxcfsPid(d), undefined, 'no lxcfs of its own');
    assert.deepEqual(lxcfsMountsUnder(d.dataDir), []);
    await d.close();
    d = undefined;
    assert.equal(lxcfsMountsUnder(hostDir).length, 1, "the host's lxcfs is still mounted");
    assert.equal(hostLxcfs!.exitCode, null, "the host's lxcfs still runs");
  });
});

describe("roostd's own lxcfs across a restart and after it died", () => {
  let d: TestDaemon | undefined;
  let dataDir = '';
  after(async () => {
    await d?.close();
    if (dataDir) assert.deepEqual(lxcfsMountsUnder(dataDir), []);
  });

  it('keeps running under a sandbox through a restart, and the next roostd reattaches', async () => {
    d = await startDaemon({ driver: 'oci' });
    dataDir = d.dataDir;
    assert.equal((await cli(d)('new', '--memory', '256', 'keeper')).exitCode, 0);
    const pid = ownLxcfsPid(d);
    assert.ok(pid, 'roostd started its own lxcfs');
    await d.stop();
    assert.ok(isLxcfs(pid), 'lxcfs outlives roostd while a sandbox uses it');
    d = await startDaemon({ driver: 'oci', dataDir: d.dataDir });
    assert.equal(ownLxcfsPid(d), pid, 'the new roostd uses the same lxcfs');
    assert.equal(lxcfsMountsUnder(dataDir).length, 1);
    const probe = parse((await cli(d)('exec', 'keeper', PROBE)).stdout);
    assert.equal(probe.memtotal_kb, String(256 * 1024));
  });

  it('after lxcfs dies: the old sandbox gets ENOTCONN and doctor names it; a new sandbox gets a new lxcfs', async () => {
    assert.ok(d);
    const roost = cli(d);
    const pid = ownLxcfsPid(d)!;
    process.kill(pid, 'SIGKILL');
    await waitFor(() => !isLxcfs(pid), 'lxcfs to die');
    const broken = await roost('exec', 'keeper', 'cat /proc/meminfo');
    assert.notEqual(broken.exitCode, 0);
    assert.match(broken.stderr, /Transport endpoint is not connected/);

    const doctor = JSON.parse((await roost('doctor', '--json')).stdout) as { problems: { problem: string; fix: string }[] };
    const keeper = (await d.sdk.sandboxes.get('keeper')).id;
    const stale = doctor.problems.find((p) => p.problem.includes(keeper));
    assert.ok(stale, JSON.stringify(doctor));
    assert.match(stale.problem, /ENOTCONN/);
    assert.match(stale.fix, /roost rm/);

    assert.equal((await roost('new', '--memory', '256', 'after')).exitCode, 0);
    const fresh = parse((await roost('exec', 'after', PROBE)).stdout);
    assert.equal(fresh.memtotal_kb, String(256 * 1024));
    const restarted = ownLxcfsPid(d);
    assert.ok(restarted && restarted !== pid, 'roostd started a new lxcfs');
    assert.equal(lxcfsMountsUnder(dataDir).length, 1, 'the dead mount is gone, one live one is there');

    assert.equal((await roost('rm', 'keeper')).exitCode, 0);
    assert.equal((await roost('doctor', '--json')).exitCode, 0, 'nothing wrong once the broken sandbox is gone');
  });
});
