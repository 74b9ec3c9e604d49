// Durability of workspaces (issue 21, "nothing is ever lost"), end to end: a real roostd with the
// OCI driver and its real btrfs pool, driven through the `roost` CLI and the SDK. What a user
// would notice: files written before a stop are there, byte for byte, after the start (also when
// a process was writing at the stop instant, and across a kill -9 of roostd); a git repository in
// the workspace always passes `git fsck --full`; every snapshot `roost sync` took of a live
// SQLite database (WAL mode) restores to a database that passes `PRAGMA integrity_check`; a full
// workspace or a full pool fails the writer and nothing else.
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { Roost } from '@roost/sdk';
import { runCli, type CliResult } from './cli.js';
import { startDaemon, type TestDaemon } from './start-daemon.js';
import { freePort, waitFor } from './wait.js';

type Cli = (args: string[]) => Promise<CliResult>;

/** A shell script in a sandbox through the SDK: exit code, stdout, stderr. */
async function sh(sdk: Roost, ref: string, script: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const handle = sdk.exec(ref, ['bash', '-c', script]);
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  for await (const chunk of handle.output()) (chunk.stream === 'stdout' ? out : err).push(Buffer.from(chunk.data));
  const exit = await handle.wait();
  return { code: exit.exitCode, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}

async function ok(sdk: Roost, ref: string, script: string): Promise<string> {
  const r = await sh(sdk, ref, script);
  assert.equal(r.code, 0, `in ${ref}: ${script.slice(0, 120)}\nstderr: ${r.stderr}`);
  return r.stdout;
}

function cliOk(r: CliResult, what: string): CliResult {
  assert.equal(r.exitCode, 0, `${what}: ${r.stderr}`);
  return r;
}

/** Writes `text` to `path` in the sandbox (base64: no quoting to get wrong). */
function writeFileScript(path: string, text: string): string {
  return `echo ${Buffer.from(text).toString('base64')} | base64 -d > ${path}`;
}

// The writer: appends fixed-format lines to data/log-<cycle>.txt; every 10 lines a file of random
// bytes is written and renamed into data/done/, and the repository gets a commit. Stops after
// $2 lines (0: never).
const WRITER = `#!/bin/bash
c=$1; n=\${2:-0}; pad=${'x'.repeat(96)}
mkdir -p /root/data/done /root/repo
cd /root/repo
if [ ! -d .git ]; then git init -q; git config user.email t@example.com; git config user.name t; git config gc.auto 0; fi
rm -f .git/index.lock   # what a user does after a commit was cut short
i=0
while [ "$n" = 0 ] || [ $i -lt $n ]; do
  i=$((i+1))
  echo "$c $i $pad" >> /root/data/log-$c.txt
  if [ $((i % 10)) = 0 ]; then
    head -c 8192 /dev/urandom > /root/data/done/.tmp; mv /root/data/done/.tmp /root/data/done/f-$c-$i
    echo "$c $i" >> history.txt; git add -A; git commit -qm "cycle $c line $i"
  fi
  sleep 0.01
done
`;

/** path → sha256 of every finished file: data/done/* and the repository's objects (immutable once named). */
const MANIFEST = `cd /root && find data/done repo/.git/objects -type f ! -name '.*' ! -name 'tmp_*' -print0 | sort -z | xargs -0 -r sha256sum`;

function parseManifest(text: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const line of text.split('\n').filter(Boolean)) {
    const m = /^([0-9a-f]{64}) {2}(.+)$/.exec(line);
    assert.ok(m, `manifest line: ${line}`);
    map.set(m[2], m[1]);
  }
  return map;
}

/** A git repository with five commits; then, once the disk is full, commits until one fails. */
const GIT_BEFORE = 'mkdir -p /root/repo && cd /root/repo && git init -q && git config user.email t@example.com && git config user.name t && for i in 1 2 3 4 5; do head -c 20K /dev/urandom > f$i; git add -A; git commit -qm "c$i"; done';
const GIT_WHEN_FULL = 'cd /root/repo; for i in $(seq 1 50); do head -c 1M /dev/urandom > g$i 2>/dev/null; git add -A 2>/dev/null && git commit -qm "g$i" >/dev/null 2>&1 || { echo "commit failed"; break; }; done';
const GIT_CHECK = 'cd /root/repo && rm -f .git/index.lock && git fsck --full --no-progress && git log --oneline | wc -l';

/** No mount and no loop device of `dir` left on the host. */
function residue(dir: string): string[] {
  const mounts = readFileSync('/proc/self/mounts', 'utf8').split('\n').filter((line) => line.includes(dir));
  const loops = execFileSync('losetup', ['-l', '-n', '-O', 'NAME,BACK-FILE'], { encoding: 'utf8' }).split('\n').filter((line) => line.includes(dir));
  return [...mounts, ...loops];
}

/** Subvolumes left in a pool (path relative to the pool), `btrfs subvolume list`. */
function subvolumes(pool: string): string[] {
  return execFileSync('btrfs', ['subvolume', 'list', '-o', pool], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean)
    .map((line) => line.replace(/^.* path /, ''));
}

describe('workspace durability on a real daemon', () => {
  let daemon: TestDaemon;
  let roost: Cli;
  let sdk: Roost;
  let dataDir = '';

  before(async () => {
    daemon = await startDaemon({ driver: 'oci', config: { workspaces: { keepSnapshots: 50 } } });
    assert.ok(daemon.daemon.workspaces, 'the daemon runs with real workspaces');
    dataDir = daemon.dataDir;
    sdk = daemon.sdk;
    const env = { ROOST_API_URL: daemon.url, ROOST_API_TOKEN: daemon.adminToken };
    roost = (args) => runCli(args, { env });
  });
  after(async () => {
    await daemon?.close();
    if (dataDir) assert.deepEqual(residue(dataDir), [], 'no mount or loop device left');
  });

  it('ten stop/start cycles, six with a writer running at the stop: every finished file identical, logs whole, git fsck clean', async () => {
    cliOk(await roost(['new', 'dur']), 'new dur');
    try {
      await ok(sdk, 'dur', `${writeFileScript('/root/writer.sh', WRITER)}; chmod +x /root/writer.sh; command -v git sha256sum`);
      const kept = new Map<string, string>(); // every finished file so far, across cycles
      const logPrefixes = new Map<string, { bytes: number; sha: string }>();
      let cutShort = 0;
      const stopStartMs: string[] = [];
      for (let cycle = 1; cycle <= 10; cycle++) {
        // Six of the ten cycles stop while the writer runs; the others after it finished.
        const writing = [1, 2, 4, 6, 7, 8].includes(cycle);
        if (writing) {
          await ok(sdk, 'dur', `setsid nohup /root/writer.sh ${cycle} 0 >/dev/null 2>&1 < /dev/null & sleep 1.5; test -s /root/data/log-${cycle}.txt`);
        } else {
          await ok(sdk, 'dur', `/root/writer.sh ${cycle} 40`);
        }
        // Just before the stop: the finished files and each log's current prefix.
        const before = parseManifest(await ok(sdk, 'dur', MANIFEST));
        for (const [path, sha] of before) kept.set(path, sha);
        const prefixes = await ok(sdk, 'dur', `cd /root/data; for f in log-*.txt; do L=$(stat -c %s $f); echo "$f $L $(head -c $L $f | sha256sum | cut -c1-64)"; done`);
        for (const line of prefixes.split('\n').filter(Boolean)) {
          const [name, bytes, sha] = line.split(' ');
          logPrefixes.set(name, { bytes: Number(bytes), sha });
        }
        const t0 = Date.now();
        cliOk(await roost(['stop', 'dur']), `stop ${cycle}`);
        const t1 = Date.now();
        cliOk(await roost(['start', 'dur']), `start ${cycle}`);
        stopStartMs.push(`${t1 - t0}/${Date.now() - t1}`);

        const after = parseManifest(await ok(sdk, 'dur', MANIFEST));
        const lost = [...kept].filter(([path, sha]) => after.get(path) !== sha).map(([path]) => path);
        assert.deepEqual(lost, [], `cycle ${cycle}: files missing or changed after stop/start`);
        assert.ok(kept.size >= cycle * 4, `cycle ${cycle}: the writer wrote (${kept.size} files so far)`);
        for (const [name, prefix] of logPrefixes) {
          const now = (await ok(sdk, 'dur', `cd /root/data; echo $(stat -c %s ${name}) $(head -c ${prefix.bytes} ${name} | sha256sum | cut -c1-64)`)).trim().split(' ');
          assert.ok(Number(now[0]) >= prefix.bytes, `cycle ${cycle}: ${name} shrank from ${prefix.bytes} to ${now[0]}`);
          assert.equal(now[1], prefix.sha, `cycle ${cycle}: ${name}'s first ${prefix.bytes} bytes changed`);
        }
        // Every line of every log whole, numbered 1, 2, 3… without a gap.
        const bad = await ok(sdk, 'dur', `cd /root/data; for f in log-*.txt; do c=\${f#log-}; c=\${c%.txt}; awk -v c=$c -v f=$f '$0 != c" "NR" ${'x'.repeat(96)}" { print f": line "NR": "$0; exit }' $f; [ "$(tail -c1 $f | od -An -tx1 | tr -d ' ')" = 0a ] || echo "$f: last line cut"; done`);
        assert.equal(bad, '', `cycle ${cycle}: torn or missing lines`);
        const fsck = await sh(sdk, 'dur', 'cd /root/repo && git fsck --full --no-progress && git log --oneline | wc -l');
        assert.equal(fsck.code, 0, `cycle ${cycle}: git fsck --full failed: ${fsck.stdout}${fsck.stderr}`);
        assert.ok(Number(fsck.stdout.trim().split('\n').at(-1)) >= cycle * 4, `cycle ${cycle}: commits ${fsck.stdout}`);
        if (writing) {
          const beyond = Number((await ok(sdk, 'dur', `stat -c %s /root/data/log-${cycle}.txt`)).trim()) - logPrefixes.get(`log-${cycle}.txt`)!.bytes;
          if (beyond > 0) cutShort++;
        }
      }
      // The writer went on between the manifest and the stop: what it wrote then survived too.
      console.log(`# durability: ${kept.size} finished files kept over 10 cycles; in ${cutShort} of 6 live cycles the log grew after the manifest; stop/start ms (CLI included): ${stopStartMs.join(' ')}`);
    } finally {
      await roost(['rm', 'dur']);
      await roost(['workspace', 'rm', 'dur']);
    }
  });

  it('every snapshot `roost sync` took of a live SQLite database (WAL) restores to a database that passes integrity_check; rows never go backwards', async () => {
    const WRITER_PY = `
import sqlite3, os, hashlib, time
db = sqlite3.connect('/root/app.db', isolation_level=None)
assert db.execute('pragma journal_mode=wal').fetchone()[0] == 'wal'
db.execute('create table if not exists t(id integer primary key, v blob not null, h text not null)')
while True:
    db.execute('begin')
    for _ in range(20):
        v = os.urandom(int.from_bytes(os.urandom(2), 'big') % 4000 + 1)
        db.execute('insert into t(v, h) values (?, ?)', (v, hashlib.sha256(v).hexdigest()))
    db.execute('commit')
    time.sleep(0.005)
`;
    const CHECK_PY = `import sqlite3, hashlib, json
db = sqlite3.connect('/root/app.db')
ic = db.execute('pragma integrity_check').fetchall()
rows = db.execute('select count(*) from t').fetchone()[0]
bad = sum(1 for v, h in db.execute('select v, h from t') if hashlib.sha256(v).hexdigest() != h)
print(json.dumps({'integrity': [r[0] for r in ic], 'rows': rows, 'bad': bad, 'mode': db.execute('pragma journal_mode').fetchone()[0]}))`;
    cliOk(await roost(['new', 'db']), 'new db');
    const checks: string[] = [];
    try {
      await ok(sdk, 'db', `${writeFileScript('/root/writer.py', WRITER_PY)}; setsid nohup python3 /root/writer.py >/root/writer.err 2>&1 < /dev/null & sleep 1; test -s /root/app.db`);
      const syncMs: number[] = [];
      for (let i = 0; i < 8; i++) {
        const t0 = Date.now();
        cliOk(await roost(['sync', 'db']), `sync ${i}`);
        syncMs.push(Date.now() - t0);
        await new Promise((resolve) => setTimeout(resolve, 300));
      }
      // The writer was running all along (a positive control: the snapshots must differ).
      assert.equal((await sh(sdk, 'db', 'pgrep -f writer.py >/dev/null && echo running; cat /root/writer.err')).stdout, 'running\n');
      cliOk(await roost(['stop', 'db']), 'stop db');
      const snapshots = JSON.parse(cliOk(await roost(['workspace', 'snapshots', 'db', '--json']), 'snapshots').stdout) as { id: string }[];
      assert.ok(snapshots.length >= 8, `one snapshot per sync: ${snapshots.length}`);
      let previous = -1;
      const counts: number[] = [];
      for (const [k, snap] of snapshots.entries()) {
        cliOk(await roost(['workspace', 'restore', 'db', snap.id]), `restore ${snap.id}`);
        const name = `db-check-${k}`;
        cliOk(await roost(['workspace', 'fork', 'db', name]), `fork ${name}`);
        checks.push(name);
        const run = cliOk(await roost(['run', '-w', name, `python3 -c "$(echo ${Buffer.from(CHECK_PY).toString('base64')} | base64 -d)"`]), `check ${name}`);
        const result = JSON.parse(run.stdout) as { integrity: string[]; rows: number; bad: number; mode: string };
        assert.deepEqual(result.integrity, ['ok'], `snapshot ${snap.id}: integrity_check`);
        assert.equal(result.bad, 0, `snapshot ${snap.id}: rows whose content does not match their hash`);
        assert.equal(result.mode, 'wal');
        assert.ok(result.rows >= previous, `snapshot ${snap.id}: ${result.rows} rows after ${previous} in the snapshot before`);
        previous = result.rows;
        counts.push(result.rows);
        cliOk(await roost(['workspace', 'rm', name]), `rm ${name}`);
        checks.pop();
      }
      assert.ok(counts[0] > 0 && counts.at(-1)! > counts[0], `rows grew across the snapshots: ${counts.join(' ')}`);
      console.log(`# sqlite: ${snapshots.length} snapshots of a live WAL database, rows ${counts.join(' ')}; roost sync took ${syncMs.join(' ')} ms (CLI included)`);
    } finally {
      for (const name of checks) await roost(['workspace', 'rm', name]);
      await roost(['rm', 'db']);
      await roost(['workspace', 'rm', 'db']);
    }
  });

  it('a full workspace (--disk): the writer gets EDQUOT, roostd and other sandboxes go on, files before are intact, deleting frees room', async () => {
    cliOk(await roost(['new', 'full', '--disk', '0.0625']), 'new full --disk');
    try {
      await ok(sdk, 'full', `mkdir -p /root/keep; for i in $(seq 1 10); do head -c 1M /dev/urandom > /root/keep/f$i; done; ${GIT_BEFORE}`);
      const kept = parseManifest(await ok(sdk, 'full', 'cd /root && find keep -type f -print0 | sort -z | xargs -0 sha256sum'));
      assert.equal(kept.size, 10);
      // A writer past 64 MiB: its write fails with EDQUOT (122), as the application sees it.
      const write = await sh(sdk, 'full', `python3 -c "
import errno
f = open('/root/big', 'wb')
try:
    for _ in range(200): f.write(b'y' * (1 << 20)); f.flush()
    print('no error')
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
"`);
      assert.equal(write.stdout.trim(), 'EDQUOT', write.stderr);
      const shell = await sh(sdk, 'full', 'head -c 10M /dev/zero > /root/more; echo "exit $?"');
      assert.match(shell.stdout + shell.stderr, /Disk quota exceeded/);
      // git committing into the full workspace fails, and leaves the repository sound.
      assert.equal(await ok(sdk, 'full', GIT_WHEN_FULL), 'commit failed\n');
      const fsckFull = await sh(sdk, 'full', GIT_CHECK);
      assert.equal(fsckFull.code, 0, `git fsck --full in a full workspace: ${fsckFull.stdout}${fsckFull.stderr}`);
      // The daemon and another sandbox are unaffected.
      assert.equal(cliOk(await roost(['run', 'echo other sandbox runs']), 'other run').stdout, 'other sandbox runs\n');
      assert.match(cliOk(await roost(['status', 'full']), 'status').stdout, /^workspace\s+full/m);
      cliOk(await roost(['stop', 'full']), 'stop full');
      cliOk(await roost(['start', 'full']), 'start full (a full workspace)');
      const after = parseManifest(await ok(sdk, 'full', 'cd /root && find keep -type f -print0 | sort -z | xargs -0 sha256sum'));
      assert.deepEqual(after, kept, 'files written before the workspace filled are intact after stop/start');
      const fsckAfter = await sh(sdk, 'full', GIT_CHECK);
      assert.equal(fsckAfter.code, 0, `git fsck --full after stop/start: ${fsckAfter.stdout}${fsckAfter.stderr}`);
      assert.ok(Number(fsckAfter.stdout.trim()) >= 5, `the five commits from before are there: ${fsckAfter.stdout}`);
      // Deleting frees room: the same 10 MiB fits again (btrfs returns the space at its next commit).
      await ok(sdk, 'full', 'rm -f /root/big /root/more; sync');
      const t0 = Date.now();
      let fits = '';
      while (Date.now() - t0 < 20_000) {
        fits = (await sh(sdk, 'full', 'head -c 10M /dev/zero > /root/again && echo fits || { rm -f /root/again; sync; }')).stdout;
        if (fits === 'fits\n') break;
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
      assert.equal(fits, 'fits\n', 'after removing files a 10 MiB write fits again');
      console.log(`# --disk: room freed by rm usable after ${Date.now() - t0} ms`);
    } finally {
      await roost(['rm', 'full']);
      await roost(['workspace', 'rm', 'full']);
    }
  });
});

describe('a full workspace pool (workspaces.poolBytes 256 MiB)', () => {
  let daemon: TestDaemon;
  let roost: Cli;
  let dataDir = '';
  before(async () => {
    daemon = await startDaemon({ driver: 'oci', config: { workspaces: { poolBytes: 256 * 1024 ** 2 } } });
    dataDir = daemon.dataDir;
    const env = { ROOST_API_URL: daemon.url, ROOST_API_TOKEN: daemon.adminToken };
    roost = (args) => runCli(args, { env });
  });
  after(async () => {
    await daemon?.close();
    if (dataDir) assert.deepEqual(residue(dataDir), [], 'no mount or loop device left');
  });

  it('the writer gets ENOSPC, the daemon answers, nothing written before is lost, deleting frees room', async () => {
    const sdk = daemon.sdk;
    cliOk(await roost(['new', 'pool']), 'new pool');
    try {
      await ok(sdk, 'pool', `mkdir -p /root/keep; for i in $(seq 1 8); do head -c 1M /dev/urandom > /root/keep/f$i; done; ${GIT_BEFORE}`);
      const kept = parseManifest(await ok(sdk, 'pool', 'cd /root && find keep -type f -print0 | sort -z | xargs -0 sha256sum'));
      const write = await sh(sdk, 'pool', `python3 -c "
import errno
f = open('/root/fill', 'wb')
try:
    for _ in range(400): f.write(b'z' * (1 << 20)); f.flush()
    f.close(); print('no error')
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
"`);
      assert.equal(write.stdout.trim(), 'ENOSPC', write.stderr);
      assert.equal(await ok(sdk, 'pool', GIT_WHEN_FULL), 'commit failed\n');
      const fsckFull = await sh(sdk, 'pool', GIT_CHECK);
      assert.equal(fsckFull.code, 0, `git fsck --full on a full pool: ${fsckFull.stdout}${fsckFull.stderr}`);
      assert.equal(cliOk(await roost(['run', 'echo other sandbox runs']), 'other run').stdout, 'other sandbox runs\n');
      assert.match(cliOk(await roost(['status', 'pool']), 'status').stdout, /^workspace\s+pool/m);
      assert.deepEqual(parseManifest(await ok(sdk, 'pool', 'cd /root && find keep -type f -print0 | sort -z | xargs -0 sha256sum')), kept);
      cliOk(await roost(['stop', 'pool']), 'stop on a full pool');
      const started = await roost(['start', 'pool']);
      assert.equal(started.exitCode, 0, `start on a full pool: ${started.stderr}`);
      assert.deepEqual(parseManifest(await ok(sdk, 'pool', 'cd /root && find keep -type f -print0 | sort -z | xargs -0 sha256sum')), kept, 'intact after stop/start');
      const fsckAfter = await sh(sdk, 'pool', GIT_CHECK);
      assert.equal(fsckAfter.code, 0, `git fsck --full after stop/start: ${fsckAfter.stdout}${fsckAfter.stderr}`);
      assert.ok(Number(fsckAfter.stdout.trim()) >= 5, `the five commits from before are there: ${fsckAfter.stdout}`);
      await ok(sdk, 'pool', 'rm -f /root/fill; sync');
      const t0 = Date.now();
      let fits = '';
      while (Date.now() - t0 < 20_000) {
        fits = (await sh(sdk, 'pool', 'head -c 50M /dev/zero > /root/again && echo fits || { rm -f /root/again; sync; }')).stdout;
        if (fits === 'fits\n') break;
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
      assert.equal(fits, 'fits\n', 'after removing the filler a 50 MiB write fits again');
    } finally {
      await roost(['rm', 'pool']);
      await roost(['workspace', 'rm', 'pool']);
    }
  });
});

const roostdPath = fileURLToPath(new URL('../../../apps/roostd/dist/main.js', import.meta.url));

async function startRoostd(dir: string, port: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, [roostdPath], {
    env: {
      ...process.env, ROOST_DATA_DIR: dir, ROOST_HTTP_ADDR: `127.0.0.1:${port}`, ROOST_SSH_ADDR: '127.0.0.1:0',
      ROOST_WORKSPACE_POOL_BYTES: String(1024 ** 3), ROOST_POOL_SIZE: '0',
    },
    stdio: 'ignore',
  });
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false)) return child;
    if (child.exitCode !== null) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  child.kill('SIGKILL');
  throw new Error('roostd did not start');
}

describe('roostd killed with SIGKILL while a sandbox writes to its workspace', () => {
  const dir = mkdtempSync(join(tmpdir(), 'roost-durable-kill-'));
  let daemon: ChildProcess | undefined;
  let port = 0;
  const env = () => ({ ROOST_API_URL: `http://127.0.0.1:${port}`, ROOST_API_TOKEN: readFileSync(join(dir, 'admin-token'), 'utf8').trim() });
  const stopDaemon = async () => {
    if (daemon && daemon.exitCode === null && daemon.signalCode === null) {
      const closed = new Promise((resolve) => daemon!.on('close', resolve));
      daemon.kill('SIGTERM');
      await closed;
    }
  };
  after(async () => {
    try {
      if (daemon && daemon.exitCode === null && daemon.signalCode === null && existsSync(join(dir, 'admin-token'))) {
        const sdk = new Roost({ apiUrl: env().ROOST_API_URL, token: env().ROOST_API_TOKEN });
        for (const sandbox of await sdk.sandboxes.list({ all: true }).catch(() => [])) await sdk.sandboxes.remove(sandbox.id).catch(() => {});
        for (const ws of await sdk.workspaces.list().catch(() => [])) await sdk.workspaces.remove(ws.id).catch(() => {});
      }
      await stopDaemon();
    } finally {
      const left = residue(dir);
      if (left.length === 0) rmSync(dir, { recursive: true, force: true });
      assert.deepEqual(left, [], `no mount or loop device left (data dir ${dir} kept if any)`);
    }
  });

  it('after the restart the sandbox is adopted, stop/start keep every file written before the kill, and nothing is left behind', async () => {
    port = await freePort();
    daemon = await startRoostd(dir, port);
    const roost: Cli = (args) => runCli(args, { env: env() });
    const sdk = new Roost({ apiUrl: env().ROOST_API_URL, token: env().ROOST_API_TOKEN });
    cliOk(await roost(['new', 'kept']), 'new kept');
    await ok(sdk, 'kept', `${writeFileScript('/root/writer.sh', WRITER)}; chmod +x /root/writer.sh; setsid nohup /root/writer.sh 1 0 >/dev/null 2>&1 < /dev/null & sleep 1.5`);
    const beforeKill = parseManifest(await ok(sdk, 'kept', MANIFEST));
    assert.ok(beforeKill.size >= 4, `the writer wrote: ${beforeKill.size} files`);

    const closed = new Promise((resolve) => daemon!.on('close', resolve));
    daemon.kill('SIGKILL');
    await closed;
    // The sandbox writes on without its daemon.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    daemon = await startRoostd(dir, port);

    const status = cliOk(await roost(['status', 'kept']), 'status after restart').stdout;
    assert.match(status, /^status\s+running/m, status);
    assert.match(status, /^workspace\s+kept/m, status);
    // Adopted: the writer started before the kill is still running, in the same workspace.
    const grown = parseManifest(await ok(sdk, 'kept', `pgrep -f writer.sh >/dev/null || { echo writer gone >&2; exit 1; }; ${MANIFEST}`));
    assert.ok(grown.size > beforeKill.size, `the writer went on after the kill: ${beforeKill.size} → ${grown.size} files`);
    cliOk(await roost(['stop', 'kept']), 'stop after restart');
    cliOk(await roost(['start', 'kept']), 'start after restart');
    const after = parseManifest(await ok(sdk, 'kept', MANIFEST));
    const lost = [...grown].filter(([path, sha]) => after.get(path) !== sha).map(([path]) => path);
    assert.deepEqual(lost, [], 'files written before the kill (and after it, before the stop) identical');
    const fsck = await sh(sdk, 'kept', 'cd /root/repo && git fsck --full --no-progress');
    assert.equal(fsck.code, 0, `git fsck --full: ${fsck.stdout}${fsck.stderr}`);
    const bad = await ok(sdk, 'kept', `awk '$0 != "1 "NR" ${'x'.repeat(96)}" { print "line "NR": "$0; exit }' /root/data/log-1.txt`);
    assert.equal(bad, '', 'every appended line whole');

    // Cleanly released: once its sandbox and workspace are removed, the pool holds no subvolume,
    // and a clean stop unmounts the pool and frees its loop device.
    const pool = join(dir, 'workspaces');
    // Positive controls: the check below sees the workspace's subvolume and the pool's mount and loop device.
    assert.ok(subvolumes(pool).some((path) => path.startsWith('ws/')), `the workspace is a subvolume: ${subvolumes(pool).join(', ')}`);
    assert.ok(residue(dir).some((line) => line.includes('workspaces.btrfs')), 'the pool is on a loop device while in use');
    cliOk(await roost(['rm', 'kept']), 'rm kept');
    cliOk(await roost(['workspace', 'rm', 'kept']), 'workspace rm kept');
    await waitFor(() => subvolumes(pool).length === 0, `no subvolume left in the pool: ${subvolumes(pool).join(', ')}`);
    await stopDaemon();
    assert.deepEqual(residue(dir), [], 'no mount or loop device of the data dir after a clean stop');
  });
});
