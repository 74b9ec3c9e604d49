// Paths inside a sandbox (core's normaliseSandboxPath) and the SDK's one-file tar, without a daemon.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { normaliseSandboxPath, RoostError } from '@roost/core';
import { firstFileOfTar, singleFileTar } from '@roost/sdk/tar';

describe('paths inside a sandbox', () => {
  it('resolves . and .. lexically, never above /, and keeps what a trailing / and /. mean', () => {
    assert.deepEqual(normaliseSandboxPath('/srv//app/./x/../y'), { path: '/srv/app/y', trailingSlash: false, contents: false });
    assert.deepEqual(normaliseSandboxPath('/../../etc/passwd'), { path: '/etc/passwd', trailingSlash: false, contents: false });
    assert.deepEqual(normaliseSandboxPath('/tmp/'), { path: '/tmp', trailingSlash: true, contents: false });
    assert.deepEqual(normaliseSandboxPath('/opt/data/.'), { path: '/opt/data', trailingSlash: false, contents: true });
    assert.deepEqual(normaliseSandboxPath('/'), { path: '/', trailingSlash: false, contents: false });
  });

  it('refuses relative paths, NUL bytes and paths past 4096 bytes with INVALID_PATH', () => {
    for (const bad of ['root/x', '', 'a:/b', '/a\0b', `/${'x'.repeat(4096)}`]) {
      assert.throws(() => normaliseSandboxPath(bad), (error: RoostError) => error.code === 'INVALID_PATH', JSON.stringify(bad.slice(0, 20)));
    }
  });
});

describe("the SDK's one-file tar", () => {
  it('writes an archive GNU tar reads byte for byte, and reads one GNU tar wrote', () => {
    const dir = mkdtempSync(join(tmpdir(), 'roost-tar-'));
    try {
      const data = Buffer.from(Array.from({ length: 70_000 }, (_, i) => i % 251));
      writeFileSync(join(dir, 'mine.tar'), singleFileTar('grüße.bin', data, 0o600));
      execFileSync('tar', ['-x', '-f', 'mine.tar'], { cwd: dir });
      assert.deepEqual(readFileSync(join(dir, 'grüße.bin')), data);
      // GNU tar's own archive of a long name (a GNU long-name header first) reads back too.
      const long = `${'n'.repeat(150)}.txt`;
      writeFileSync(join(dir, long), 'long name\n');
      execFileSync('tar', ['-c', '-f', 'theirs.tar', long], { cwd: dir });
      assert.equal(Buffer.from(firstFileOfTar(readFileSync(join(dir, 'theirs.tar')))).toString(), 'long name\n');
      assert.throws(() => singleFileTar('a/b', data), /one path component/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
