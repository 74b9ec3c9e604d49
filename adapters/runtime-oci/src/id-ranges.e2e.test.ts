// Host id ranges on the real engine: each sandbox's root is its own host uid (processes and the
// files it writes), the image still looks root-owned inside, and a process with one sandbox's
// host uid (what an escape would give) can touch neither the files nor the processes of
// another. Then the fallback: when idmapped mounts are refused, all share SHIFT_BASE and the
// doctor says so. Allocation in the store is tested in packages/testkit/src/id-ranges.test.ts.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import type { Logger, Runtime, SandboxSpec } from '@roost/core';
import { SHIFT_BASE, SHIFT_SIZE } from './constants.js';
import { createOciRuntime } from './driver.js';
import { hostIdBase, INSTANCE_REGION_SIZE } from './id-ranges.js';
import { createImageStore } from './images.js';
import { readInstance } from './instance.js';
import { findResidue } from './residue.js';

const limits = { cpus: 1, memoryMb: 512, pids: 256, openFiles: 1024 };
// The test's runtime (a fresh state dir) is an instance of its own, with its own region of host
// id ranges: no other roostd on this host maps any of its indexes.
const FIRST_RANGE = 100;

async function readAll(stream: Readable): Promise<string> {
  let text = '';
  for await (const chunk of stream) text += (chunk as Buffer).toString();
  return text;
}

async function sh(runtime: Runtime, id: string, script: string): Promise<{ stdout: string; stderr: string; exitCode: number }> {
  const p = await runtime.exec(id, { command: ['bash', '-c', script] });
  const [stdout, stderr, status] = await Promise.all([readAll(p.stdout), readAll(p.stderr), p.wait()]);
  return { stdout, stderr, exitCode: status.exitCode };
}

/** Real, effective, saved and filesystem uid of a host process, from /proc/<pid>/status. */
async function hostUids(pid: number): Promise<number[]> {
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  return /^Uid:\s+(.*)$/m.exec(status)![1]!.trim().split(/\s+/).map(Number);
}

/** The host pid of a process with exactly this argv, from /proc. */
async function hostPidOf(argv: string[]): Promise<number | undefined> {
  const wanted = `${argv.join('\0')}\0`;
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await fs.readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline === wanted) return Number(entry);
  }
  return undefined;
}

/** Runs a host command as `uid` (gid the same, no supplementary groups), as an escaped process would. */
function asHostUid(uid: number, args: string[]): { code: number; stderr: string } {
  const r = spawnSync('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--', ...args], { encoding: 'utf8' });
  return { code: r.status ?? 128, stderr: r.stderr };
}

interface Logged {
  level: 'warn' | 'info' | 'error' | 'debug';
  fields: Record<string, unknown>;
  msg: string;
}

function recordingLogger(lines: Logged[]): Logger {
  const at = (level: Logged['level']) => (fields: Record<string, unknown>, msg: string) => void lines.push({ level, fields, msg });
  return { info: at('info'), warn: at('warn'), error: at('error'), debug: at('debug') };
}

const median = (values: number[]) => [...values].sort((x, y) => x - y)[Math.floor(values.length / 2)]!;

interface SuiteContext {
  runtime: () => Runtime;
  create(idRange: number): Promise<string>;
  /** Creates and destroys `rounds` sandboxes one after the other; the driver's own timings of the creates. */
  timeCreates(rounds: number, firstRange: number): Promise<string>;
  stateDir: () => string;
  logs: Logged[];
}

function suite(name: string, forceFallback: boolean, body: (ctx: SuiteContext) => void) {
  describe(name, () => {
    let runtime: Runtime;
    let stateDir: string;
    const made: string[] = [];
    const logs: Logged[] = [];
    before(async () => {
      // 0711 like a data dir's runtime dir would need to be for the escape checks to get past
      // the directory permissions: what is tested is the owner of the sandbox's own files.
      stateDir = await fs.mkdtemp(path.join(tmpdir(), 'roost-idranges-'));
      await fs.chmod(stateDir, 0o711);
      const images = createImageStore({ logger: recordingLogger([]) });
      await images.ensureDefaultImage();
      runtime = await createOciRuntime({
        stateDir,
        images,
        logger: recordingLogger(logs),
        ...(forceFallback ? { probeIdmap: async () => 'refused on purpose by the test' } : {}),
      });
    });
    after(async () => {
      for (const id of made) await runtime?.destroy(id);
      await runtime?.close();
      for (const id of made) assert.deepEqual(await findResidue(stateDir, id), [], `residue of ${id}`);
      await fs.rm(stateDir, { recursive: true, force: true });
    });
    const create = async (idRange: number) => {
      const spec: SandboxSpec = { id: `sb_idr${randomBytes(6).toString('hex')}`, hostname: 'ranges', image: 'debian', limits, network: 'none', env: {}, idRange };
      made.push(spec.id);
      await runtime.create(spec);
      return spec.id;
    };
    body({
      runtime: () => runtime,
      create,
      async timeCreates(rounds, firstRange) {
        const ids: string[] = [];
        for (let i = 0; i < rounds; i++) {
          const id = await create(firstRange + i);
          ids.push(id);
          await runtime.destroy(id);
        }
        const created = logs.filter((l) => l.msg === 'sandbox created' && ids.includes(l.fields.id as string));
        assert.equal(created.length, rounds);
        const step = (field: string) => median(created.map((l) => l.fields[field] as number)).toFixed(1);
        return `whole create ${step('ms')} ms: dirs, files and mount ${step('mountMs')}, engine create ${step('createMs')}, network ${step('netMs')}, start ${step('startMs')}`;
      },
      stateDir: () => stateDir,
      logs,
    });
  });
}

suite('host id ranges on the OCI driver', false, ({ runtime, create, timeCreates, stateDir, logs }) => {
  let a: string;
  let b: string;
  const upper = (id: string, file = '') => path.join(stateDir(), 'sandboxes', id, 'upper', file);
  const initPid = async (id: string) => Number((await fs.readFile(path.join(stateDir(), 'sandboxes', id, 'init.pid'), 'utf8')).trim());
  let baseA: number;
  let baseB: number;

  before(async () => {
    const { idRegion } = readInstance(stateDir());
    assert.notEqual(idRegion.number, undefined, 'a fresh state dir is not the default instance');
    baseA = hostIdBase(idRegion.first + FIRST_RANGE);
    baseB = hostIdBase(idRegion.first + FIRST_RANGE + 1);
    a = await create(FIRST_RANGE);
    b = await create(FIRST_RANGE + 1);
  });

  it('probes idmapped mounts at start and uses them (no fallback warning)', () => {
    assert.deepEqual(logs.filter((l) => /idmapped mounts unavailable/.test(l.msg)), []);
  });

  it("each sandbox's root processes run as its own host uid", async () => {
    assert.deepEqual(await hostUids(await initPid(a)), [baseA, baseA, baseA, baseA]);
    assert.deepEqual(await hostUids(await initPid(b)), [baseB, baseB, baseB, baseB]);
    // An exec'd process too: find it on the host by its marker argument.
    const marker = `1000.${randomBytes(3).readUIntBE(0, 3)}`;
    const sleeper = await runtime().exec(a, { command: ['sleep', marker] });
    try {
      let pid: number | undefined;
      for (let i = 0; i < 100 && pid === undefined; i++) {
        pid = await hostPidOf(['sleep', marker]);
        if (pid === undefined) await new Promise((resolve) => setImmediate(resolve));
      }
      assert.ok(pid, 'the exec\'d sleep shows on the host');
      assert.deepEqual(await hostUids(pid), [baseA, baseA, baseA, baseA]);
    } finally {
      sleeper.kill('SIGKILL');
      await sleeper.wait();
    }
  });

  it('the image looks root-owned inside every sandbox, and the uid map is the sandbox\'s range', async () => {
    for (const [id, base] of [[a, baseA], [b, baseB]] as const) {
      const r = await sh(runtime(), id, 'stat -c "%u:%g %U" / /etc/passwd /usr/bin/su /root; stat -c %A /usr/bin/su; cat /proc/self/uid_map');
      assert.equal(r.exitCode, 0, r.stderr);
      const lines = r.stdout.trim().split('\n');
      assert.deepEqual(lines.slice(0, 4), ['0:0 root', '0:0 root', '0:0 root', '0:0 root']);
      assert.equal(lines[4], '-rwsr-xr-x', 'setuid bit kept');
      assert.deepEqual(lines[5]!.trim().split(/\s+/).map(Number), [0, base, SHIFT_SIZE]);
    }
  });

  it('files a sandbox writes, chowns and copies up are owned on the host within its own range', async () => {
    const r = await sh(
      runtime(),
      a,
      [
        'set -e',
        'echo new > /root/new-file',
        'mkdir /srv/by-1000 && chown 1000:1001 /srv/by-1000',
        // Copy-up of an image file (owned by root inside), then of its metadata only.
        'echo appended >> /etc/debian_version',
        'chown 7:7 /etc/issue',
        'useradd -m -u 1234 bob',
        'su bob -c "touch ~/bobs-file"',
        'stat -c "%u:%g" /etc/debian_version /etc/issue /home/bob/bobs-file',
      ].join('\n'),
    );
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, '0:0\n7:7\n1234:1234\n');
    const owner = async (file: string) => {
      const st = await fs.stat(upper(a, file));
      return `${st.uid}:${st.gid}`;
    };
    assert.equal(await owner('root/new-file'), `${baseA}:${baseA}`);
    assert.equal(await owner('srv/by-1000'), `${baseA + 1000}:${baseA + 1001}`);
    assert.equal(await owner('etc/debian_version'), `${baseA}:${baseA}`);
    assert.equal(await owner('etc/issue'), `${baseA + 7}:${baseA + 7}`);
    assert.equal(await owner('home/bob/bobs-file'), `${baseA + 1234}:${baseA + 1234}`);
    assert.equal(await owner(''), `${baseA}:${baseA}`, 'the upper dir itself belongs to the sandbox\'s root');
  });

  it('dpkg installs and removes a package, and apt reads its database', async () => {
    const r = await sh(
      runtime(),
      b,
      [
        'set -e',
        'cd /tmp && mkdir -p pkg/DEBIAN pkg/usr/share/roost-probe',
        'printf "Package: roost-probe\\nVersion: 1.0\\nArchitecture: all\\nMaintainer: Roost <roost@example.org>\\nDescription: probe\\n" > pkg/DEBIAN/control',
        'echo hello > pkg/usr/share/roost-probe/file',
        'dpkg-deb --root-owner-group -b pkg probe.deb >/dev/null',
        'dpkg -i probe.deb >/dev/null',
        'dpkg-statoverride --update --add nobody nogroup 0640 /usr/share/roost-probe/file',
        'stat -c "%U:%G %a" /usr/share/roost-probe/file',
        'apt-cache policy roost-probe | grep -c "Installed: 1.0"',
        'apt-get check -q=2 && echo apt-ok',
        'dpkg-statoverride --remove /usr/share/roost-probe/file && dpkg -r roost-probe >/dev/null && echo removed',
      ].join('\n'),
    );
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, 'nobody:nogroup 640\n1\napt-ok\nremoved\n');
  });

  it("a process with one sandbox's host uid can touch neither another sandbox's files nor its processes", async () => {
    for (const id of [a, b]) {
      const made = await sh(runtime(), id, 'echo secret > /root/secret && chmod 600 /root/secret');
      assert.equal(made.exitCode, 0, made.stderr);
    }
    // Positive controls first: as A's root (host uid baseA), A's own files and init are reachable.
    const ownRead = asHostUid(baseA, ['cat', upper(a, 'root/secret')]);
    assert.equal(ownRead.code, 0, `A's host uid reads A's files: ${ownRead.stderr}`);
    const own = asHostUid(baseA, ['touch', upper(a, 'root/escaped-into-own')]);
    assert.equal(own.code, 0, `A's host uid writes A's files: ${own.stderr}`);
    const signalOwn = asHostUid(baseA, ['kill', '-0', String(await initPid(a))]);
    assert.equal(signalOwn.code, 0, `A's host uid may signal A's init: ${signalOwn.stderr}`);
    // B's /root is B's root's alone (0700): refused to A's.
    const other = asHostUid(baseA, ['touch', upper(b, 'root/escaped-into-other')]);
    assert.notEqual(other.code, 0);
    assert.match(other.stderr, /Permission denied/);
    const otherRead = asHostUid(baseA, ['cat', upper(b, 'root/secret')]);
    assert.notEqual(otherRead.code, 0);
    assert.match(otherRead.stderr, /Permission denied/);
    const signalOther = asHostUid(baseA, ['kill', '-0', String(await initPid(b))]);
    assert.notEqual(signalOther.code, 0);
    assert.match(signalOther.stderr, /Operation not permitted/);
  });

  it('refuses a range that another held sandbox has', async () => {
    await assert.rejects(create(FIRST_RANGE), /host id range \d+ is in use by sandbox sb_idr/);
  });

  it("refuses an index past the instance's region: it would be another instance's ids", async () => {
    await assert.rejects(create(INSTANCE_REGION_SIZE), { code: 'TOO_MANY_SANDBOXES', message: /holds 512 sandboxes/ });
  });

  it('figures: the mount step and the whole create, p50 of 15 (in the test output)', async (t) => {
    t.diagnostic(`own range (idmapped image layer, roost-idmap): ${await timeCreates(15, FIRST_RANGE + 10)}`);
  });

  it('no doctor warning about a shared range', async () => {
    const { problems } = await runtime().diagnose();
    assert.deepEqual(problems.filter((p) => /same host uid range/.test(p.problem)), []);
  });
});

suite('host id ranges when idmapped mounts are refused (fallback)', true, ({ runtime, create, timeCreates, stateDir, logs }) => {
  const initPid = async (id: string) => Number((await fs.readFile(path.join(stateDir(), 'sandboxes', id, 'init.pid'), 'utf8')).trim());

  it('logs a warning at start', () => {
    const warning = logs.find((l) => l.level === 'warn' && /idmapped mounts unavailable/.test(l.msg));
    assert.ok(warning, 'a warning line');
    assert.equal(warning.fields.reason, 'refused on purpose by the test');
  });

  it('runs every sandbox in the shared range, which still works (image root-owned inside, writes owned by SHIFT_BASE)', async () => {
    const a = await create(FIRST_RANGE + 2);
    const b = await create(FIRST_RANGE + 3);
    assert.deepEqual(await hostUids(await initPid(a)), [SHIFT_BASE, SHIFT_BASE, SHIFT_BASE, SHIFT_BASE]);
    assert.deepEqual(await hostUids(await initPid(b)), [SHIFT_BASE, SHIFT_BASE, SHIFT_BASE, SHIFT_BASE]);
    const r = await sh(runtime(), a, 'stat -c %u /etc/passwd; echo x > /root/f');
    assert.deepEqual([r.exitCode, r.stdout], [0, '0\n']);
    assert.equal((await fs.stat(path.join(stateDir(), 'sandboxes', a, 'upper', 'root', 'f'))).uid, SHIFT_BASE);
  });

  it('figures: the mount step and the whole create in the shared range, p50 of 15 (in the test output)', async (t) => {
    t.diagnostic(`shared range (plain overlay mount, as before): ${await timeCreates(15, FIRST_RANGE + 10)}`);
  });

  it('roost doctor (Runtime.diagnose) reports the shared range as a problem with a fix', async () => {
    const { problems } = await runtime().diagnose();
    const shared = problems.find((p) => /same host uid range/.test(p.problem));
    assert.ok(shared, JSON.stringify(problems));
    assert.match(shared.problem, /refused on purpose by the test/);
    assert.match(shared.fix, /idmapped mounts/);
  });
});
