// `roost cp` and `run -f` end to end: a real roostd with the OCI driver, driven through the real
// `roost` binary. Round trips are compared byte for byte (binary, 20 MB, names with spaces and
// unicode, a symlink kept as a symlink, modes); a traversal archive and a symlink to / inside
// the sandbox are shown to write inside the sandbox only; the size limit, a missing path, an
// image without tar and uploaded files for a run.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli, startDaemon, type TestDaemon } from '@roost/testkit';

const maxUploadBytes = 40 * 1024 * 1024;

/** Every entry under a directory: type, mode, size and sha256 (files) or target (symlinks). */
function describeTree(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (dir: string, prefix: string) => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      const info = lstatSync(path);
      const key = `${prefix}${name}`;
      const mode = (info.mode & 0o7777).toString(8);
      if (info.isSymbolicLink()) out[key] = `link -> ${readlinkSync(path)}`;
      else if (info.isDirectory()) {
        out[key] = `dir ${mode}`;
        walk(path, `${key}/`);
      } else out[key] = `file ${mode} ${info.size} ${createHash('sha256').update(readFileSync(path)).digest('hex')}`;
    }
  };
  walk(root, '');
  return out;
}

/** A ustar archive with whatever entry names we like (node-tar and GNU tar refuse to write `..`). */
function rawTar(entries: { name: string; data: string }[]): Buffer {
  const blocks: Buffer[] = [];
  for (const entry of entries) {
    const header = Buffer.alloc(512);
    header.write(entry.name, 0, 100, 'utf8');
    header.write('0000644\0', 100);
    header.write('0000000\0', 108);
    header.write('0000000\0', 116);
    header.write(`${Buffer.byteLength(entry.data).toString(8).padStart(11, '0')}\0`, 124);
    header.write(`${Math.floor(Date.now() / 1000).toString(8).padStart(11, '0')}\0`, 136);
    header.write('        ', 148);
    header.write('0', 156);
    header.write('ustar\0', 257);
    header.write('00', 263);
    let sum = 0;
    for (const byte of header) sum += byte;
    header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
    const data = Buffer.from(entry.data);
    blocks.push(header, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

describe('roost cp and run -f on a real daemon', () => {
  let daemon: TestDaemon;
  let env: Record<string, string>;
  let work: string;
  const roost = (args: string[], opts: { stdin?: string | Uint8Array; cwd?: string } = {}) => runCli(args, { env, ...opts });
  /** The daemon cleans up after a cut-off upload once it sees the connection go. */
  const waitForEmpty = async (dir: string) => {
    for (let tries = 0; ; tries++) {
      const listed = await inside(`ls -A ${dir}`);
      if (listed === '') return;
      if (tries > 50) assert.equal(listed, '', `${dir} still holds something`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
  const inside = async (script: string) => {
    const result = await roost(['exec', 'box', script]);
    assert.equal(result.exitCode, 0, `${script}: ${result.stderr}`);
    return result.stdout;
  };

  before(async () => {
    daemon = await startDaemon({ driver: 'oci', config: { files: { maxUploadBytes } } });
    env = { ROOST_API_URL: daemon.url, ROOST_API_TOKEN: daemon.adminToken };
    work = mkdtempSync(join(tmpdir(), 'roost-cp-test-'));
    const made = await roost(['new', 'box']);
    assert.equal(made.exitCode, 0, made.stderr);
  });
  after(async () => {
    await daemon?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('copies a directory in and out byte-identical: binary, 20 MB, spaces and unicode, a symlink kept, modes', async () => {
    const src = join(work, 'project');
    mkdirSync(join(src, 'sub dir', 'empty'), { recursive: true });
    writeFileSync(join(src, 'random.bin'), randomBytes(1024 * 1024 + 7));
    writeFileSync(join(src, 'big.bin'), randomBytes(20 * 1024 * 1024));
    writeFileSync(join(src, 'sub dir', 'grüße 日本 file.txt'), 'unicode\n');
    writeFileSync(join(src, 'run.sh'), '#!/bin/sh\necho ran\n');
    chmodSync(join(src, 'run.sh'), 0o755);
    symlinkSync('sub dir/grüße 日本 file.txt', join(src, 'link'));
    symlinkSync('/nonexistent/target', join(src, 'dangling'));
    const expected = describeTree(src);

    // A missing destination becomes the directory (docker cp), its parent exists.
    const copyIn = await roost(['cp', '-r', src, 'box:/srv/app']);
    assert.equal(copyIn.exitCode, 0, copyIn.stderr);
    assert.equal(copyIn.stdout, '');
    const sums = await inside("cd /srv/app && sha256sum big.bin random.bin 'sub dir/grüße 日本 file.txt' && readlink link dangling && ./run.sh && stat -c '%U %a' run.sh");
    const hash = (path: string) => createHash('sha256').update(readFileSync(join(src, path))).digest('hex');
    assert.equal(
      sums,
      `${hash('big.bin')}  big.bin\n${hash('random.bin')}  random.bin\n${hash('sub dir/grüße 日本 file.txt')}  sub dir/grüße 日本 file.txt\n` +
        'sub dir/grüße 日本 file.txt\n/nonexistent/target\nran\nroot 755\n',
    );
    // Nothing else was left beside it (no temporary directory).
    assert.equal(await inside('ls -A /srv'), 'app\n');

    // Out to a missing local path: it becomes that directory, identical to what went in.
    const back = join(work, 'back');
    const copyOut = await roost(['cp', '--json', 'box:/srv/app', back]);
    assert.equal(copyOut.exitCode, 0, copyOut.stderr);
    const report = JSON.parse(copyOut.stdout) as { direction: string; bytes: number };
    assert.equal(report.direction, 'out');
    assert.ok(report.bytes > 21 * 1024 * 1024, `${report.bytes} bytes`);
    assert.deepEqual(describeTree(back), expected);
    assert.deepEqual(readdirSync(work).sort(), ['back', 'project']);

    // Into an existing directory: it lands inside (back/app), merging on a second copy.
    const again = await roost(['cp', 'box:/srv/app', back]);
    assert.equal(again.exitCode, 0, again.stderr);
    assert.deepEqual(describeTree(join(back, 'app')), expected);
  });

  it('follows docker cp for files: into a directory, a new name, ".", a trailing slash that must exist', async () => {
    const file = join(work, 'note with space.txt');
    writeFileSync(file, 'first\n');
    assert.equal((await roost(['cp', file, 'box:/tmp/'])).exitCode, 0);
    assert.equal(await inside("cat '/tmp/note with space.txt'"), 'first\n');
    writeFileSync(file, 'second\n');
    assert.equal((await roost(['cp', file, 'box:/tmp/renamed'])).exitCode, 0);
    assert.equal(await inside('cat /tmp/renamed'), 'second\n');

    const missingDir = await roost(['cp', file, 'box:/tmp/nodir/']);
    assert.equal(missingDir.exitCode, 1);
    assert.match(missingDir.stderr, /no such directory in the sandbox: \/tmp\/nodir\/.*\(PATH_NOT_FOUND\)/);

    const here = mkdtempSync(join(work, 'cwd-'));
    const hostname = await roost(['cp', 'box:/etc/hostname', '.'], { cwd: here });
    assert.equal(hostname.exitCode, 0, hostname.stderr);
    assert.equal(readFileSync(join(here, 'hostname'), 'utf8'), 'box\n');

    // Copy a directory's contents with "/.", and use - for tar streams both ways.
    await inside('mkdir -p /opt/data && echo a > /opt/data/a && echo b > /opt/data/b');
    const tar = await roost(['cp', 'box:/opt/data/.', '-']);
    assert.equal(tar.exitCode, 0, tar.stderr);
    await inside('mkdir -p /opt/copy');
    const fromStdin = await roost(['cp', '-', 'box:/opt/copy'], { stdin: tar.stdoutBytes });
    assert.equal(fromStdin.exitCode, 0, fromStdin.stderr);
    assert.equal(await inside('cat /opt/copy/a /opt/copy/b'), 'a\nb\n');

    // A local directory's contents ("/.") to a missing path: it is made, with the directory's mode.
    const local = join(work, 'contents');
    mkdirSync(join(local, 'inner'), { recursive: true });
    chmodSync(local, 0o750);
    writeFileSync(join(local, 'inner', 'c'), 'c\n');
    const made = await roost(['cp', `${local}/.`, 'box:/opt/made']);
    assert.equal(made.exitCode, 0, made.stderr);
    assert.equal(await inside("stat -c %a /opt/made && cat /opt/made/inner/c && ls -A /opt | grep -c '^.roost-cp-' || true"), '750\nc\n0\n');
    // And out: the sandbox directory's contents into a missing local path.
    const out = join(work, 'data-out');
    const contentsOut = await roost(['cp', 'box:/opt/data/.', out]);
    assert.equal(contentsOut.exitCode, 0, contentsOut.stderr);
    assert.deepEqual(readdirSync(out).sort(), ['a', 'b']);
  });

  it('never writes outside the sandbox: a traversal archive and a symlink to / inside it stay inside', async () => {
    const marker = `roost-escape-${randomBytes(6).toString('hex')}`;
    // Positive control: the host path the attack aims at is writable here.
    writeFileSync(join('/tmp', marker), 'probe');
    assert.ok(existsSync(join('/tmp', marker)));
    rmSync(join('/tmp', marker));

    // A symlink in the sandbox pointing at its / : a copy through it lands in the sandbox's /tmp.
    await inside('ln -sfn / /root/hostroot');
    const file = join(work, marker);
    writeFileSync(file, 'through the link\n');
    const viaLink = await roost(['cp', file, 'box:/root/hostroot/tmp/']);
    assert.equal(viaLink.exitCode, 0, viaLink.stderr);
    assert.equal(await inside(`cat /tmp/${marker}`), 'through the link\n');
    assert.equal(existsSync(join('/tmp', marker)), false, 'the copy wrote on the host');

    // An archive with a ../ name: the sandbox's GNU tar refuses the member, and since nothing is
    // moved into place unless tar succeeded, not even the archive's harmless entry appears.
    await inside('mkdir -p /root/sub');
    const evil = rawTar([
      { name: `/tmp/${marker}-abs`, data: 'abs\n' },
      { name: `../../../../../../tmp/${marker}-dotdot`, data: 'dotdot\n' },
    ]);
    const refused = await roost(['cp', '-', 'box:/root/sub'], { stdin: evil });
    assert.equal(refused.exitCode, 1);
    assert.match(refused.stderr, /Member name contains '\.\.'.*\(COPY_FAILED\)/);
    assert.equal(await inside('ls -A /root/sub | wc -l'), '0\n');
    // An absolute name alone: its leading / is stripped, it lands under the destination.
    const absolute = await roost(['cp', '-', 'box:/root/sub'], { stdin: rawTar([{ name: `/tmp/${marker}-abs`, data: 'abs\n' }]) });
    assert.equal(absolute.exitCode, 0, absolute.stderr);
    assert.equal(await inside(`cat /root/sub/tmp/${marker}-abs`), 'abs\n');
    for (const name of [`${marker}-dotdot`, `${marker}-abs`]) {
      assert.equal(existsSync(join('/tmp', name)), false, `${name} on the host`);
      assert.equal((await roost(['exec', 'box', `test -e /tmp/${name}`])).exitCode, 1, `${name} in the sandbox's /tmp`);
    }

    // A destination with .. is resolved inside the sandbox, never above its /.
    const dotdot = await roost(['cp', file, 'box:/../../../../root/']);
    assert.equal(dotdot.exitCode, 0, dotdot.stderr);
    assert.equal(await inside(`cat /root/${marker}`), 'through the link\n');
  });

  it('refuses an archive past files.maxUploadBytes and leaves nothing behind', async () => {
    const big = join(work, 'too-big.bin');
    writeFileSync(big, randomBytes(maxUploadBytes + 1024 * 1024));
    await inside('mkdir -p /root/limit');
    const result = await roost(['cp', big, 'box:/root/limit/']);
    assert.equal(result.exitCode, 1);
    assert.match(result.stderr, /larger than 41943040 bytes.*\(UPLOAD_TOO_LARGE\)/);
    assert.match(result.stderr, /files\.maxUploadBytes/);
    assert.equal(await inside('ls -A /root/limit | wc -l'), '0\n');
    // The daemon still takes the next copy.
    writeFileSync(join(work, 'small'), 'ok\n');
    assert.equal((await roost(['cp', join(work, 'small'), 'box:/root/limit/'])).exitCode, 0);
    assert.equal(await inside('cat /root/limit/small'), 'ok\n');
  });

  it('says a missing path is missing, and names a missing tar', async () => {
    const out = join(work, 'never');
    const missing = await roost(['cp', 'box:/no/such/file', out]);
    assert.equal(missing.exitCode, 1);
    assert.match(missing.stderr, /no such file or directory in the sandbox: \/no\/such\/file.*\(PATH_NOT_FOUND\)/);
    assert.equal(existsSync(out), false);
    assert.deepEqual(readdirSync(work).filter((name) => name.startsWith('.roost-cp-')), []);

    const relative = await roost(['cp', 'box:etc/hostname', out]);
    assert.equal(relative.exitCode, 2);
    assert.match(relative.stderr, /absolute/);

    const made = await roost(['new', 'notar']);
    assert.equal(made.exitCode, 0, made.stderr);
    // Positive control first: this sandbox copies out fine while it has tar.
    assert.equal((await roost(['cp', 'notar:/etc/hostname', join(work, 'notar-hostname')])).exitCode, 0);
    assert.equal((await roost(['exec', 'notar', 'rm -f "$(command -v tar)"'])).exitCode, 0);
    const noTar = await roost(['cp', 'notar:/etc/hostname', join(work, 'x')]);
    assert.equal(noTar.exitCode, 1);
    assert.match(noTar.stderr, /this image has no tar.*\(TAR_NOT_AVAILABLE\)/);
    assert.equal((await roost(['rm', 'notar'])).exitCode, 0);
  });

  it('copies in as the sandbox\'s default user, or --user', async () => {
    writeFileSync(join(work, 'owned'), 'x');
    assert.equal((await roost(['cp', join(work, 'owned'), 'box:/tmp/owned-root'])).exitCode, 0);
    assert.equal((await roost(['cp', '--user', 'nobody', join(work, 'owned'), 'box:/tmp/owned-nobody'])).exitCode, 0);
    assert.equal(await inside('stat -c %U /tmp/owned-root /tmp/owned-nobody'), 'root\nnobody\n');
    const refused = await roost(['cp', '--user', 'nobody', join(work, 'owned'), 'box:/root/']);
    assert.equal(refused.exitCode, 1);
    assert.match(refused.stderr, /Permission denied.*\(COPY_FAILED\)/);
  });

  it('the SDK and the HTTP API: files.write/read, putArchive of a stream, errors with codes, a cut-off upload leaves nothing', async () => {
    const sb = await daemon.sdk.sandboxes.get('box');
    await sb.files.write('/root/sdk.txt', 'from the sdk\n');
    assert.equal(new TextDecoder().decode(await sb.files.read('/root/sdk.txt')), 'from the sdk\n');
    await assert.rejects(sb.files.read('/root/none'), (error: { code?: string }) => error.code === 'PATH_NOT_FOUND');

    // Plain fetch, as curl would: status codes and error bodies.
    const url = (path: string) => `${daemon.url}/api/v1/sandboxes/box/files?path=${encodeURIComponent(path)}`;
    const auth = { authorization: `Bearer ${daemon.adminToken}` };
    const missing = await fetch(url('/no/such'), { headers: auth });
    assert.equal(missing.status, 404);
    assert.equal(((await missing.json()) as { error: { code: string } }).error.code, 'PATH_NOT_FOUND');
    const relative = await fetch(url('root/x'), { headers: auth });
    assert.equal(relative.status, 400);
    assert.equal(((await relative.json()) as { error: { code: string } }).error.code, 'INVALID_PATH');
    const nul = await fetch(url('/root/a\0b'), { headers: auth });
    assert.equal(((await nul.json()) as { error: { code: string } }).error.code, 'INVALID_PATH');
    const wrongType = await fetch(url('/root'), { method: 'PUT', headers: { ...auth, 'content-type': 'application/json' }, body: '{}' });
    assert.equal(wrongType.status, 400);

    // An upload whose source fails midway: the request is cut, nothing appears, no temporary directory stays.
    await inside('mkdir -p /root/cut');
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield rawTar([{ name: 'partial.bin', data: 'x'.repeat(100_000) }]).subarray(0, 50_000);
      // Positive control: the half-extracted archive is there while the upload is under way.
      for (let tries = 0; !/^\.roost-cp-/m.test(await inside('ls -A /root/cut')); tries++) {
        assert.ok(tries < 50, 'the extraction never started');
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      throw new Error('the source broke');
    }
    await assert.rejects(sb.files.putArchive('/root/cut', failing(), { into: true }));
    await waitForEmpty('/root/cut');
  });

  it('run -f puts the files into the working directory before the script starts', async () => {
    const script = join(work, 'hello.py');
    writeFileSync(script, 'print("hello from", __file__)\n');
    const data = join(work, 'data.bin');
    writeFileSync(data, randomBytes(3 * 1024 * 1024));
    const digest = createHash('sha256').update(readFileSync(data)).digest('hex');
    const run = await roost(['run', '-f', script, '--file', data, 'python3 hello.py && sha256sum data.bin && pwd']);
    assert.equal(run.exitCode, 0, run.stderr);
    assert.equal(run.stdout, `hello from /root/hello.py\n${digest}  data.bin\n/root\n`);

    // With stdin the run goes over the WebSocket: the files are there too.
    const piped = await roost(['run', '-f', script, 'head -c 5 hello.py; echo; cat'], { stdin: 'piped\n' });
    assert.equal(piped.exitCode, 0, piped.stderr);
    assert.equal(piped.stdout, 'print\npiped\n');

    const unknownId = await daemon.sdk.run({ script: 'true', fileIds: ['file_0000000000000000'] }).wait().catch((error: { code?: string }) => error.code);
    assert.equal(unknownId, 'FILE_NOT_FOUND');

    const missing = await roost(['run', '-f', join(work, 'nope.txt'), 'true']);
    assert.equal(missing.exitCode, 2);
    assert.match(missing.stderr, /-f .*nope\.txt: no such local file/);
  });
});
