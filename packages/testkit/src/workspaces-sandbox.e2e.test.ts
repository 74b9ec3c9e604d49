// Workspaces with real sandboxes: runtime-oci (crun/runc, idmapped mounts) on the local btrfs
// pool. What a sandbox writes stays for the next one, owners included; --disk is enforced on
// the writer alone; forks cost the same for 10 MB and 1 GB; nothing is left on the host.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ProcessHandle, Runtime, SandboxSpec } from '@roost/core';
import { createImageStore, createOciRuntime, findResidue, SHIFT_BASE } from '@roost/runtime-oci';
import { openLocalWorkspaces, type LocalWorkspaces } from '@roost/workspaces-local';
import { silentLogger } from './test-deps.js';

const MiB = 1024 * 1024;

async function collect(proc: ProcessHandle): Promise<{ exitCode: number | null; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const reading = Promise.all([
    (async () => {
      for await (const c of proc.stdout) stdout += (c as Buffer).toString();
    })(),
    (async () => {
      for await (const c of proc.stderr) stderr += (c as Buffer).toString();
    })(),
  ]);
  const status = await proc.wait();
  await reading;
  return { exitCode: status.exitCode, stdout, stderr };
}

async function loopDevicesOf(file: string): Promise<string[]> {
  const found: string[] = [];
  for (const dev of await fs.readdir('/sys/block').catch(() => [] as string[])) {
    if (!dev.startsWith('loop')) continue;
    const backing = (await fs.readFile(`/sys/block/${dev}/loop/backing_file`, 'utf8').catch(() => '')).trim();
    if (backing === file) found.push(`/dev/${dev}`);
  }
  return found;
}

async function mountsUnder(dir: string): Promise<string[]> {
  return (await fs.readFile('/proc/self/mountinfo', 'utf8')).split('\n').map((l) => l.split(' ')[4]).filter((m): m is string => !!m && m.startsWith(dir));
}

/** Fills `dir` with `bytes` of incompressible data in 1 MiB files (a workspace's worth of files). */
async function fill(dir: string, bytes: number): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  const chunk = randomBytes(MiB);
  for (let i = 0; i < bytes / MiB; i++) {
    chunk.writeUInt32LE(i, 0);
    await fs.writeFile(path.join(dir, `f${i}`), chunk);
  }
}

describe('workspaces with real sandboxes (runtime-oci on the btrfs pool)', () => {
  let dataDir: string;
  let stateDir: string;
  let runtime: Runtime;
  let workspaces: LocalWorkspaces;
  const sandboxes = new Set<string>();
  const opened = new Set<string>();
  const made = new Set<string>();
  let nextRange = 0;

  const spec = (overrides: Partial<SandboxSpec>): SandboxSpec => ({
    id: `sb_ws${randomBytes(5).toString('hex')}`,
    hostname: 'ws-test',
    image: 'debian',
    limits: { cpus: 1, memoryMb: 256, pids: 128, openFiles: 4096 },
    network: 'none',
    env: {},
    idRange: nextRange++,
    ...overrides,
  });
  const newWorkspace = async (opts: { diskBytes?: number | null; base?: string } = {}) => {
    const id = `ws_e2e${randomBytes(5).toString('hex')}`;
    made.add(id);
    await workspaces.create(id, opts);
    return id;
  };
  /** A sandbox on the workspace (opened for it), as core's SandboxService makes one. */
  const sandboxOn = async (workspaceId: string | undefined) => {
    const s = spec({});
    if (workspaceId) {
      s.workspace = await workspaces.open(workspaceId);
      opened.add(workspaceId);
    }
    sandboxes.add(s.id);
    const t0 = performance.now();
    await runtime.create(s);
    return { id: s.id, createMs: performance.now() - t0 };
  };
  const destroy = async (id: string, workspaceId?: string) => {
    await runtime.destroy(id);
    sandboxes.delete(id);
    assert.deepEqual(await findResidue(stateDir, id), [], 'the sandbox left nothing');
    if (workspaceId) {
      await workspaces.release(workspaceId);
      opened.delete(workspaceId);
    }
  };
  const sh = async (id: string, script: string, user?: string) => collect(await runtime.exec(id, { command: ['bash', '-c', script], user }));

  before(async () => {
    dataDir = await fs.mkdtemp(path.join(tmpdir(), 'roost-ws-e2e-'));
    stateDir = path.join(dataDir, 'runtime');
    await fs.mkdir(stateDir);
    const images = createImageStore({ logger: silentLogger });
    await images.ensureDefaultImage();
    const t0 = performance.now();
    workspaces = await openLocalWorkspaces({ dataDir, poolBytes: 4 * 1024 ** 3, keepSnapshots: 2, logger: silentLogger });
    console.log(`pool: made and mounted a 4 GiB pool in ${(performance.now() - t0).toFixed(0)} ms (make ${workspaces.pool.timings.createMs} ms, mount ${workspaces.pool.timings.mountMs} ms)`);
    runtime = await createOciRuntime({ stateDir, images, logger: silentLogger });
  });

  after(async () => {
    for (const id of sandboxes) await runtime?.destroy(id).catch(() => {});
    for (const id of opened) await workspaces?.release(id).catch(() => {});
    for (const id of made) await workspaces?.delete(id).catch(() => {});
    await runtime?.close();
    await workspaces?.close();
    const mounts = dataDir ? await mountsUnder(dataDir) : [];
    const loops = dataDir ? await loopDevicesOf(path.join(dataDir, 'workspaces.btrfs')) : [];
    if (dataDir) await fs.rm(dataDir, { recursive: true, force: true });
    assert.deepEqual(mounts, [], 'no mount is left');
    assert.deepEqual(loops, [], 'no loop device is left');
  });

  it('keeps what a sandbox wrote for the next sandbox on the workspace, with the same owners', async () => {
    const ws = await newWorkspace();
    const first = await sandboxOn(ws);
    const wrote = await sh(first.id, [
      'set -e',
      'mkdir -p /srv/data && chown 1234:1234 /srv/data',
      'echo "root wrote this" > /root/notes.txt',
    ].join('\n'));
    assert.equal(wrote.exitCode, 0, wrote.stderr);
    const asUser = await sh(first.id, 'echo "user 1234 wrote this" > /srv/data/mine.txt && id -u', '1234');
    assert.equal(asUser.stdout, '1234\n', asUser.stderr);
    await destroy(first.id, ws);

    // On disk: the canonical ids, whatever host range the sandbox had.
    const stored = await fs.stat(path.join(workspaces.workspaceDir(ws), 'upper/srv/data/mine.txt'));
    assert.equal(stored.uid, SHIFT_BASE + 1234);

    // The next sandbox gets another host id range, and sees the same.
    const second = await sandboxOn(ws);
    const seen = await sh(second.id, 'cat /root/notes.txt /srv/data/mine.txt; stat -c "%u:%g %n" /srv/data/mine.txt /root/notes.txt');
    assert.equal(seen.stdout, 'root wrote this\nuser 1234 wrote this\n1234:1234 /srv/data/mine.txt\n0:0 /root/notes.txt\n', seen.stderr);
    const appended = await sh(second.id, 'echo again >> /srv/data/mine.txt && cat /srv/data/mine.txt', '1234');
    assert.equal(appended.stdout, 'user 1234 wrote this\nagain\n', appended.stderr);
    await destroy(second.id, ws);
    assert.ok(existsSync(path.join(workspaces.workspaceDir(ws), 'upper/srv/data/mine.txt')), 'destroy never deletes the workspace');
  });

  it('keeps package-manager-style changes: files under /usr, deleted image files, file capabilities', async () => {
    const ws = await newWorkspace();
    const first = await sandboxOn(ws);
    const installed = await sh(first.id, [
      'set -e',
      'mkdir -p /usr/lib/roost-pkg && echo "lib v1" > /usr/lib/roost-pkg/lib.txt',
      'printf "#!/bin/sh\\necho hello from the package\\n" > /usr/local/bin/roost-hello && chmod 755 /usr/local/bin/roost-hello',
      // dpkg's way to drop a file of the image: a whiteout in the upper layer.
      'rm /etc/issue',
      // And its way to replace a directory: an opaque one.
      'rm -rf /etc/skel && mkdir /etc/skel && echo mine > /etc/skel/only',
      'test ! -e /etc/issue',
      // What `apt install iputils-ping` leaves: a file capability (cap_net_raw+ep), as setcap writes it.
      `python3 -c "import os, struct; os.setxattr('/usr/local/bin/roost-hello', 'security.capability', struct.pack('<5I', 0x02000001, 1 << 13, 0, 0, 0))"`,
    ].join('\n'));
    assert.equal(installed.exitCode, 0, installed.stderr);
    await destroy(first.id, ws);

    const second = await sandboxOn(ws);
    const seen = await sh(second.id, [
      'cat /usr/lib/roost-pkg/lib.txt; roost-hello; test -e /etc/issue && echo "issue is back" || echo "issue stays deleted"; ls -A /etc/skel',
      `python3 -c "import os, struct; c = os.getxattr('/usr/local/bin/roost-hello', 'security.capability'); print('cap_net_raw' if struct.unpack('<I', c[4:8])[0] & (1 << 13) else 'no cap')"`,
    ].join('\n'));
    assert.equal(seen.stdout, 'lib v1\nhello from the package\nissue stays deleted\nonly\ncap_net_raw\n', seen.stderr);
    await destroy(second.id, ws);
  });

  it('enforces --disk on the writer: EDQUOT in the sandbox, while another sandbox and the host keep writing', async () => {
    const small = await newWorkspace({ diskBytes: 32 * MiB });
    const other = await newWorkspace({});
    const writer = await sandboxOn(small);
    const neighbour = await sandboxOn(other);
    // Reachable first: 8 MiB fits.
    const fits = await sh(writer.id, 'head -c 8M /dev/urandom > /root/fits && sync && echo ok');
    assert.equal(fits.stdout, 'ok\n', fits.stderr);
    const past = await sh(writer.id, 'head -c 64M /dev/urandom > /root/too-big; echo "exit $?"; sync');
    assert.match(past.stdout, /exit [1-9]/);
    assert.match(past.stderr, /Disk quota exceeded/);
    const usage = await workspaces.usage(small);
    assert.equal(usage.limitBytes, 32 * MiB);
    assert.ok(usage.usedBytes <= 33 * MiB, `used ${usage.usedBytes} stays at the limit`);

    const neighbourWrites = await sh(neighbour.id, 'head -c 48M /dev/urandom > /root/big && sync && stat -c %s /root/big');
    assert.equal(neighbourWrites.stdout, `${48 * MiB}\n`, neighbourWrites.stderr);
    const hostFile = path.join(dataDir, 'host-write');
    await fs.writeFile(hostFile, randomBytes(48 * MiB));
    assert.equal((await fs.stat(hostFile)).size, 48 * MiB);
    await fs.rm(hostFile);
    await destroy(neighbour.id, other);
    // The workspace is full. The next sandbox on it still starts writable (overlayfs writes to
    // work/ at mount; at the limit btrfs refuses even that), so it can free space.
    await destroy(writer.id, small);
    const next = await sandboxOn(small);
    const freed = await sh(next.id, 'ls /root/too-big >/dev/null && rm -f /root/too-big && echo small > /root/after && cat /root/after');
    assert.equal(freed.stdout, 'small\n', freed.stderr);
    assert.equal((await workspaces.usage(small)).limitBytes, 32 * MiB, 'the size stays what was asked');
    // And it is still enforced there.
    const again = await sh(next.id, 'head -c 64M /dev/urandom > /root/again; echo "exit $?"; rm -f /root/again');
    assert.match(again.stderr, /Disk quota exceeded/);
    await destroy(next.id, small);
    assert.equal((await workspaces.usage(small)).limitBytes, 32 * MiB);
  });

  it('forks a live sandbox\'s workspace under freeze: a file written just before is in the child', async () => {
    const ws = await newWorkspace();
    const box = await sandboxOn(ws);
    // A writer that keeps appending, as a busy program would.
    const writer = await runtime.exec(box.id, { command: ['bash', '-c', 'i=0; while :; do i=$((i+1)); echo "$i" >> /root/counter; sleep 0.01; done'] });
    writer.stdout.resume();
    writer.stderr.resume();
    try {
      const marker = await sh(box.id, 'while [ ! -s /root/counter ]; do sleep 0.01; done; echo "written just before" > /root/marker && tail -n1 /root/counter');
      assert.equal(marker.exitCode, 0);
      const child = `ws_e2e${randomBytes(5).toString('hex')}`;
      made.add(child);
      let frozenFor = 0;
      await workspaces.fork(ws, child, {
        quiesce: async (capture) => {
          await runtime.freeze(box.id);
          const t0 = performance.now();
          try {
            return await capture();
          } finally {
            frozenFor = performance.now() - t0;
            await runtime.thaw(box.id);
          }
        },
      });
      console.log(`fork of a live sandbox's workspace: frozen for ${frozenFor.toFixed(1)} ms`);
      const childDir = path.join(workspaces.workspaceDir(child), 'upper/root');
      assert.equal(await fs.readFile(path.join(childDir, 'marker'), 'utf8'), 'written just before\n');
      // The counter is whole: every line complete, counting up from 1 (a point in time).
      const lines = (await fs.readFile(path.join(childDir, 'counter'), 'utf8')).split('\n');
      assert.equal(lines.pop(), '', 'the last line is complete');
      lines.forEach((l, i) => assert.equal(l, String(i + 1)));
      assert.ok(lines.length >= Number(marker.stdout.trim()));
      // The sandbox goes on after the thaw.
      const goesOn = await sh(box.id, 'echo alive');
      assert.equal(goesOn.stdout, 'alive\n');
    } finally {
      writer.kill();
      await writer.wait().catch(() => {});
    }
    await destroy(box.id, ws);
  });

  it('forks 10 MB and 1 GB workspaces in about the same time', async () => {
    const results: Record<string, { forkMs: number; snapshotMs: number }> = {};
    for (const [label, bytes] of [['10 MB', 10 * MiB], ['1 GB', 1024 * MiB]] as const) {
      const ws = await newWorkspace();
      const mount = await workspaces.open(ws);
      await fill(path.join(mount.dir, 'upper', 'data'), bytes);
      await workspaces.release(ws);
      // Best of 3 (a shared 2-core machine): each a new fork.
      let forkMs = Infinity;
      for (let i = 0; i < 3; i++) {
        const child = `ws_e2e${randomBytes(5).toString('hex')}`;
        made.add(child);
        const t0 = performance.now();
        await workspaces.fork(ws, child);
        forkMs = Math.min(forkMs, performance.now() - t0);
        await workspaces.delete(child);
      }
      let snapshotMs = Infinity;
      for (let i = 0; i < 2; i++) snapshotMs = Math.min(snapshotMs, (await workspaces.takeSnapshot(ws)).ms);
      results[label] = { forkMs, snapshotMs };
      console.log(`${label}: fork ${forkMs.toFixed(1)} ms (target ≤ 50 ms), read-only snapshot ${snapshotMs.toFixed(1)} ms`);
      // A fork shares the data: the child's own use is next to nothing.
      const child = await newWorkspace({ base: ws });
      assert.ok((await workspaces.usage(child)).usedBytes < MiB);
      await workspaces.delete(child);
      await workspaces.delete(ws);
    }
    const small = results['10 MB']!;
    const big = results['1 GB']!;
    assert.ok(big.forkMs < 50 || big.forkMs < small.forkMs * 3 + 20, `a 1 GB fork (${big.forkMs.toFixed(1)} ms) costs about what a 10 MB one does (${small.forkMs.toFixed(1)} ms)`);
    assert.ok(big.forkMs < 500, `a 1 GB fork takes ${big.forkMs.toFixed(1)} ms`);
  });

  it('mounts a workspace at about the cost of a sandbox\'s own layer', async () => {
    const timings = { without: Infinity, with: Infinity };
    for (let i = 0; i < 3; i++) {
      const plain = await sandboxOn(undefined);
      timings.without = Math.min(timings.without, plain.createMs);
      await destroy(plain.id);
      const ws = await newWorkspace();
      const onWs = await sandboxOn(ws);
      timings.with = Math.min(timings.with, onWs.createMs);
      await destroy(onWs.id, ws);
      await workspaces.delete(ws);
    }
    console.log(`sandbox create: ${timings.without.toFixed(0)} ms without a workspace, ${timings.with.toFixed(0)} ms with one (best of 3)`);
    assert.ok(timings.with < timings.without + 200, 'a workspace adds little to a sandbox start');
  });

  it('leaves nothing of a removed workspace', async () => {
    const ws = await newWorkspace();
    const box = await sandboxOn(ws);
    await sh(box.id, 'echo x > /root/x');
    await destroy(box.id, ws);
    await workspaces.sync(ws);
    const dirs = [workspaces.workspaceDir(ws), workspaces.snapshotsDir(ws)];
    assert.ok(dirs.every((d) => existsSync(d)), 'reachable first: it has a subvolume and snapshots');
    await workspaces.delete(ws);
    assert.deepEqual(dirs.filter((d) => existsSync(d)), []);
    assert.deepEqual(await fs.readdir(path.join(workspaces.pool.root, 'tmp')), [], 'no half-made subvolume');
    assert.ok(!(await workspaces.list()).includes(ws));
  });
});
