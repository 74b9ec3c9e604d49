// The S3 sync engine against a real s3rver: round trip of everything an overlayfs upper holds,
// change detection, dedup, crash safety, outages, corruption, GC and retention.
// Runs as root (owners, trusted.* and security.* xattrs, mknod). Trees are compared with a
// Python dump (os.lstat, os.listxattr), not with the engine's own helper.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isRoostError } from '@roost/core';
import { SyncEngine, s3ConfigFromEnv, type SyncEngineOpts } from '@roost/workspaces-s3';
import { runProcess } from './process.js';
import { startS3, type TestS3 } from './s3-server.js';
import { waitFor } from './wait.js';

const MiB = 1024 * 1024;
/** The canonical owner of a sandbox's root (runtime-oci's SHIFT_BASE). */
const CANONICAL_ROOT = 1_000_000;
const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));

// Everything a user would notice about a tree: type, mode, owners, mtime (ns), content hash,
// symlink target, device number, xattrs, and which paths share an inode.
const dumpScript = String.raw`
import hashlib, json, os, stat, sys
root = os.fsencode(sys.argv[1])
out, inodes = {}, {}
for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for name in [b''] + sorted(dirnames + filenames) if dirpath == root else sorted(dirnames + filenames):
        path = os.path.join(dirpath, name) if name else dirpath
        rel = os.path.relpath(path, root).decode('utf-8', 'backslashreplace')
        st = os.lstat(path)
        e = {'mode': oct(st.st_mode), 'uid': st.st_uid, 'gid': st.st_gid, 'mtime_ns': st.st_mtime_ns}
        if stat.S_ISREG(st.st_mode):
            h = hashlib.sha256()
            with open(path, 'rb') as f:
                for block in iter(lambda: f.read(1 << 20), b''): h.update(block)
            e['sha256'] = h.hexdigest(); e['size'] = st.st_size
            if st.st_nlink > 1: inodes.setdefault(st.st_ino, []).append(rel)
        if stat.S_ISLNK(st.st_mode): e['target'] = os.readlink(path).decode('utf-8', 'backslashreplace')
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode): e['rdev'] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
        e['xattrs'] = {n: os.getxattr(path, n, follow_symlinks=False).hex() for n in sorted(os.listxattr(path, follow_symlinks=False))}
        out[rel] = e
out['(hardlinks)'] = sorted(sorted(v) for v in inodes.values())
print(json.dumps(out, sort_keys=True))
`;

async function dumpTree(dir: string): Promise<Record<string, unknown>> {
  const result = await runProcess('python3', ['-c', dumpScript, dir]);
  assert.equal(result.exitCode, 0, result.stderr);
  return JSON.parse(result.stdout) as Record<string, unknown>;
}

async function sh(script: string): Promise<void> {
  const result = await runProcess('bash', ['-euc', script]);
  assert.equal(result.exitCode, 0, `${script}\n${result.stderr}`);
}

/** An upper dir with every kind of entry overlayfs and a sandbox leave behind. */
async function makeUpper(dir: string): Promise<void> {
  mkdirSync(join(dir, 'root/.cache/deep/er'), { recursive: true });
  writeFileSync(join(dir, 'root/empty'), '');
  writeFileSync(join(dir, 'root/hello.txt'), 'hello\n');
  writeFileSync(join(dir, 'root/.cache/deep/er/big.bin'), randomBytes(2 * MiB + 12345));
  writeFileSync(join(dir, 'root/exact-chunk.bin'), randomBytes(MiB));
  await sh(`
    cd '${dir}'
    mkdir -p usr/bin etc/opaque var/run
    printf 'binary' > usr/bin/ping && chmod 4755 usr/bin/ping
    printf 'linked' > root/hard-a && ln root/hard-a etc/hard-b
    ln -s ../root/hello.txt etc/link-to-hello
    ln -s /nowhere/at/all etc/dangling
    mknod etc/whiteout c 0 0
    mkfifo var/run/fifo
    printf 'opaque content' > etc/opaque/kept
    printf 'name with a newline' > "root/new
line"
    printf 'not utf-8' > "root/$(printf 'caf\\351')"
    chown -R ${CANONICAL_ROOT}:${CANONICAL_ROOT} .
    chown ${CANONICAL_ROOT + 1000}:${CANONICAL_ROOT + 1000} root/hello.txt
    chmod 0700 root
    chmod 0640 root/hello.txt
    chmod 4755 usr/bin/ping
    touch -h -d '2021-02-03 04:05:06.123456789' etc/link-to-hello
    touch -d '2020-01-01 00:00:00.987654321' root/hello.txt
  `);
  const xattrs = String.raw`
import os, struct, sys
d = sys.argv[1]
os.setxattr(d + '/etc/opaque', 'trusted.overlay.opaque', b'y')
os.setxattr(d + '/usr/bin/ping', 'security.capability', struct.pack('<IIIII', 0x02000001, 1 << 13, 0, 0, 0))
os.setxattr(d + '/root/hello.txt', 'user.comment', b'\x00binary\xffvalue')
os.setxattr(d + '/root/hello.txt', 'user.empty', b'')
os.setxattr(d + '/etc/dangling', 'trusted.overlay.redirect', b'/elsewhere', follow_symlinks=False)
`;
  const result = await runProcess('python3', ['-c', xattrs, dir]);
  assert.equal(result.exitCode, 0, result.stderr);
}

/** The chunk objects s3rver holds on its disk. */
function chunkObjects(s3: TestS3): string[] {
  const base = join(s3.dir, s3.bucket, 'chunks');
  if (!existsSync(base)) return [];
  return readdirSync(base, { recursive: true, encoding: 'utf8' }).filter((name) => name.endsWith('._S3rver_object'));
}

function sha256Pieces(data: Buffer): string[] {
  const hashes: string[] = [];
  for (let offset = 0; offset < data.length; offset += MiB) hashes.push(createHash('sha256').update(data.subarray(offset, offset + MiB)).digest('hex'));
  return hashes;
}

describe('S3 workspace sync engine (real s3rver)', () => {
  let s3: TestS3;
  let work: string;
  const engines: SyncEngine[] = [];
  const engine = (name: string, opts: Partial<SyncEngineOpts> & { prefix?: string } = {}) => {
    const store = s3ConfigFromEnv({ ...s3.env, ROOST_S3_PREFIX: opts.prefix ?? '', ROOST_S3_MAX_ATTEMPTS: '3' })!;
    const made = new SyncEngine({ store, cacheDir: join(work, `cache-${name}`), keepSnapshots: 5, ...opts });
    engines.push(made);
    return made;
  };
  const fresh = (name: string) => {
    const dir = join(work, name);
    mkdirSync(dir, { recursive: true });
    return dir;
  };

  before(async () => {
    assert.equal(process.getuid?.(), 0, 'run as root: owners, trusted.* xattrs and mknod need it');
    s3 = await startS3();
    work = mkdtempSync(join(tmpdir(), 'roost-ws-s3-'));
  });
  after(async () => {
    for (const made of engines) made.close();
    await s3?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('restores a tree with every kind of entry byte for byte, with owners, modes, mtimes and xattrs', async () => {
    const upper = fresh('kinds');
    await makeUpper(upper);
    const source = await dumpTree(upper);
    assert.equal((source['etc/whiteout'] as { rdev: number[] }).rdev.join(':'), '0:0', 'the fixture holds a whiteout');
    assert.ok((source['usr/bin/ping'] as { xattrs: Record<string, string> }).xattrs['security.capability'], 'the fixture holds a file capability');
    const sync = engine('kinds');
    const pushed = await sync.push(upper, 'kinds');
    assert.equal(pushed.unchanged, false);
    const into = join(work, 'kinds-restored');
    await sync.restore('kinds', into);
    assert.deepEqual(await dumpTree(into), source);
    // Another machine: a fresh engine with no cache restores the same.
    const elsewhere = join(work, 'kinds-elsewhere');
    await engine('kinds-elsewhere').restore('kinds', elsewhere);
    assert.deepEqual(await dumpTree(elsewhere), source);
  });

  it('uploads nothing for an unchanged tree and ~1 MiB for a 1 MiB change', async () => {
    const upper = fresh('changes');
    mkdirSync(join(upper, 'data'));
    for (let i = 0; i < 50; i++) writeFileSync(join(upper, 'data', `small-${i}`), randomBytes(10_000));
    writeFileSync(join(upper, 'data', 'large.bin'), randomBytes(8 * MiB));
    const sync = engine('changes');
    const first = await sync.push(upper, 'changes');
    assert.ok(first.uploadedBytes >= 8 * MiB + 500_000, `first push sends everything: ${first.uploadedBytes}`);
    const objectsBefore = chunkObjects(s3).length;

    const noop = await sync.push(upper, 'changes');
    assert.equal(noop.unchanged, true);
    assert.equal(noop.uploadedBytes, 0);
    assert.equal(noop.hashedFiles, 0, 'no file read again');
    assert.equal(noop.snapshot.id, first.snapshot.id);
    assert.equal(chunkObjects(s3).length, objectsBefore);

    // 1 MiB overwritten in the middle of the 8 MiB file.
    await sh(`dd if=/dev/urandom of='${join(upper, 'data', 'large.bin')}' bs=1M seek=3 count=1 conv=notrunc status=none`);
    const change = await sync.push(upper, 'changes');
    assert.equal(change.unchanged, false);
    assert.equal(change.hashedFiles, 1, 'only the changed file is read');
    assert.equal(change.uploadedChunks, 1);
    assert.ok(change.uploadedBytes >= MiB && change.uploadedBytes < MiB + 64 * 1024, `~1 MiB sent: ${change.uploadedBytes}`);

    const into = join(work, 'changes-restored');
    await sync.restore('changes', into);
    assert.deepEqual(await dumpTree(into), await dumpTree(upper));
  });

  it('stores identical content once across workspaces', async () => {
    const upper = fresh('dedup');
    for (let i = 0; i < 4; i++) writeFileSync(join(upper, `f${i}`), randomBytes(MiB + 1000));
    const first = await engine('dedup-a').push(upper, 'dedup-a');
    assert.equal(first.uploadedChunks, 8);
    const objects = chunkObjects(s3).length;
    const second = await engine('dedup-b').push(upper, 'dedup-b');
    assert.equal(second.uploadedChunks, 0, 'the second workspace finds every chunk stored');
    assert.equal(chunkObjects(s3).length, objects);
    const into = join(work, 'dedup-restored');
    await engine('dedup-c').restore('dedup-b', into);
    assert.deepEqual(await dumpTree(into), await dumpTree(upper));
  });

  it('a push killed with SIGKILL midway leaves the previous snapshot restorable, and the next push completes', async () => {
    const upper = fresh('killed');
    writeFileSync(join(upper, 'before.txt'), 'the previous snapshot');
    const sync = engine('killed');
    const previous = await sync.push(upper, 'killed');
    const previousTree = await dumpTree(upper);
    for (let i = 0; i < 40; i++) writeFileSync(join(upper, `new-${i}.bin`), randomBytes(2 * MiB));
    const chunksBefore = chunkObjects(s3).length;

    const child = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { SyncEngine, s3ConfigFromEnv } from '@roost/workspaces-s3';
         const engine = new SyncEngine({ store: s3ConfigFromEnv(process.env), cacheDir: ${JSON.stringify(join(work, 'cache-killed'))}, keepSnapshots: 5, concurrency: 2 });
         await engine.push(${JSON.stringify(upper)}, 'killed');
         console.log('finished');`,
      ],
      { cwd: repoRoot, env: { ...process.env, ...s3.env }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    child.stdout.on('data', (data: Buffer) => (output += data.toString()));
    child.stderr.on('data', (data: Buffer) => (output += data.toString()));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      await waitFor(() => chunkObjects(s3).length >= chunksBefore + 10, 'the child has uploaded some chunks', 30_000);
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
    assert.ok(!output.includes('finished'), `killed midway, not after: ${output}`);
    assert.ok(chunkObjects(s3).length < chunksBefore + 80, 'not every chunk was sent');

    const snapshots = await sync.snapshots('killed');
    assert.deepEqual(
      snapshots.map((s) => s.id),
      [previous.snapshot.id],
    );
    const restored = join(work, 'killed-previous');
    await engine('killed-reader').restore('killed', restored);
    assert.deepEqual(await dumpTree(restored), previousTree);

    const next = await sync.push(upper, 'killed');
    assert.equal(next.unchanged, false);
    assert.ok(next.uploadedChunks < 80, `the chunks the killed push sent are not sent again: ${next.uploadedChunks}`);
    const after = join(work, 'killed-next');
    await engine('killed-reader-2').restore('killed', after);
    assert.deepEqual(await dumpTree(after), await dumpTree(upper));
  });

  it('with the server down a push fails clearly and deletes nothing; it works again once the server is back', async () => {
    const upper = fresh('outage');
    writeFileSync(join(upper, 'a.txt'), 'first');
    const sync = engine('outage');
    await sync.push(upper, 'outage');
    writeFileSync(join(upper, 'b.txt'), 'written during the outage');
    const tree = await dumpTree(upper);
    const cacheFiles = readdirSync(join(work, 'cache-outage')).sort();

    await s3.pause();
    try {
      const error = await sync.push(upper, 'outage').then(
        () => null,
        (e: unknown) => e,
      );
      assert.ok(isRoostError(error), `a RoostError: ${String(error)}`);
      assert.equal(error.code, 'WORKSPACE_SYNC_FAILED');
      assert.match(error.message, /unreachable/);
      assert.ok(error.message.includes(s3.url), `names the store: ${error.message}`);
      assert.deepEqual(await dumpTree(upper), tree, 'nothing local changed');
      assert.deepEqual(readdirSync(join(work, 'cache-outage')).sort(), cacheFiles, 'the cache is as it was, no temp files left');
    } finally {
      await s3.start();
    }
    const back = await sync.push(upper, 'outage');
    assert.equal(back.unchanged, false);
    const into = join(work, 'outage-restored');
    await sync.restore('outage', into);
    assert.deepEqual(await dumpTree(into), tree);
  });

  it('detects a corrupted and a missing chunk on restore and leaves no directory behind', async () => {
    const upper = fresh('damaged');
    const corruptData = randomBytes(MiB + 100);
    const missingData = randomBytes(300_000);
    writeFileSync(join(upper, 'will-be-corrupt.bin'), corruptData);
    writeFileSync(join(upper, 'will-be-missing.bin'), missingData);
    // The only small file: its pack holds just its bytes, so the pack's hash is the file's.
    const packedData = randomBytes(5000);
    writeFileSync(join(upper, 'packed-small.txt'), packedData);
    const sync = engine('damaged');
    await sync.push(upper, 'damaged');
    const corruptHash = sha256Pieces(corruptData)[1]!;
    const missingHash = sha256Pieces(missingData)[0]!;
    const restoreFails = async (into: string) => {
      const error = await sync.restore('damaged', into).then(
        () => null,
        (e: unknown) => e,
      );
      assert.ok(isRoostError(error), `a RoostError: ${String(error)}`);
      assert.equal(error.code, 'WORKSPACE_UNREADABLE');
      assert.ok(!existsSync(into), 'no restored directory');
      assert.deepEqual(readdirSync(work).filter((name) => name.includes('.restoring-')), [], 'no temp dir left');
      return error;
    };
    // Reachable first: the untouched snapshot restores.
    await sync.restore('damaged', join(work, 'damaged-ok'));

    const corruptFile = s3.objectFile(`chunks/${corruptHash.slice(0, 2)}/${corruptHash}`);
    const bytes = readFileSync(corruptFile);
    bytes[50] = bytes[50]! ^ 0xff;
    writeFileSync(corruptFile, bytes);
    const packHash = sha256Pieces(packedData)[0]!;
    const packFile = s3.objectFile(`chunks/${packHash.slice(0, 2)}/${packHash}`);
    const packBytes = readFileSync(packFile);
    packBytes[4000] = packBytes[4000]! ^ 0x01;
    writeFileSync(packFile, packBytes);
    const corrupted = await restoreFails(join(work, 'damaged-1'));
    const corruptList = corrupted.details?.corrupted as string[];
    assert.ok(corruptList.some((what) => what.includes(corruptHash) && what.includes('will-be-corrupt.bin')), corruptList.join('; '));
    assert.ok(corruptList.some((what) => what.includes(packHash) && what.includes('packed-small.txt')), corruptList.join('; '));
    assert.match(corrupted.message, /corrupted/);

    const missingFile = s3.objectFile(`chunks/${missingHash.slice(0, 2)}/${missingHash}`);
    for (const suffix of ['object', 'object.md5', 'metadata.json']) rmSync(missingFile.replace(/object$/, suffix), { force: true });
    const missing = await restoreFails(join(work, 'damaged-2'));
    assert.ok((missing.details?.missing as string[]).some((what) => what.includes(missingHash) && what.includes('will-be-missing.bin')));
    assert.equal(missing.details?.count, 3);
  });

  it('keeps the last N snapshots, any of which restores', async () => {
    const upper = fresh('retention');
    const sync = engine('retention', { keepSnapshots: 2 });
    const states: { id: string; tree: Record<string, unknown> }[] = [];
    for (let i = 0; i < 4; i++) {
      writeFileSync(join(upper, 'state.txt'), `state ${i}`);
      const pushed = await sync.push(upper, 'retention');
      states.push({ id: pushed.snapshot.id, tree: await dumpTree(upper) });
    }
    const kept = await sync.snapshots('retention');
    assert.deepEqual(
      kept.map((s) => s.id),
      [states[2]!.id, states[3]!.id],
    );
    const older = join(work, 'retention-older');
    await sync.restore('retention', older, { snapshotId: states[2]!.id });
    assert.deepEqual(await dumpTree(older), states[2]!.tree);
    await assert.rejects(sync.restore('retention', join(work, 'retention-gone'), { snapshotId: states[0]!.id }), { code: 'WORKSPACE_SNAPSHOT_NOT_FOUND' });
  });

  it('GC removes unreferenced chunks only, and defers while a push holds a lease', async () => {
    // A prefix of its own, so the other tests' chunks do not count.
    const sync = engine('gc', { keepSnapshots: 1, prefix: 'gc/' });
    const upper = fresh('gc');
    const oldData = randomBytes(3 * MiB);
    const keptData = randomBytes(2 * MiB);
    writeFileSync(join(upper, 'kept.bin'), keptData);
    writeFileSync(join(upper, 'replaced.bin'), oldData);
    await sync.push(upper, 'gc');
    const newData = randomBytes(MiB);
    writeFileSync(join(upper, 'replaced.bin'), newData);
    await sync.push(upper, 'gc');
    const chunkDir = join(s3.dir, s3.bucket, 'gc', 'chunks');
    const countChunks = () => !existsSync(chunkDir) ? 0 : readdirSync(chunkDir, { recursive: true, encoding: 'utf8' }).filter((n) => n.endsWith('._S3rver_object')).length;
    assert.equal(countChunks(), 6);

    await sync.store.put('leases/push-held-by-a-test', Buffer.from('{}'));
    const deferred = await sync.gc();
    assert.equal(deferred.deferred, true);
    assert.equal(countChunks(), 6, 'nothing deleted while a push holds its lease');
    await sync.store.delete('leases/push-held-by-a-test');

    const collected = await sync.gc();
    assert.deepEqual(collected, { deferred: false, deletedChunks: 3, keptChunks: 3 });
    const left = readdirSync(chunkDir, { recursive: true, encoding: 'utf8' })
      .filter((n) => n.endsWith('._S3rver_object'))
      .map((n) => n.split('/').pop()!.replace('._S3rver_object', ''))
      .sort();
    assert.deepEqual(left, [...sha256Pieces(keptData), ...sha256Pieces(newData)].sort());
    const into = join(work, 'gc-restored');
    await sync.restore('gc', into);
    assert.deepEqual(await dumpTree(into), await dumpTree(upper));

    await sync.deleteWorkspace('gc');
    assert.deepEqual(await sync.snapshots('gc'), []);
    assert.equal((await sync.gc()).deletedChunks, 3);
    assert.equal(countChunks(), 0);
  });
});
