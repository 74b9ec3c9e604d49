import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { checkHostPrerequisites } from './prereqs.js';

describe('host prerequisites', () => {
  const root = mkdtempSync(join(tmpdir(), 'roost-prereq-'));
  after(() => rmSync(root, { recursive: true, force: true }));

  it('finds nothing wrong on this host', async () => {
    assert.deepEqual(await checkHostPrerequisites(), []);
  });

  it('names each missing prerequisite with its fix', async () => {
    const proc = join(root, 'proc');
    mkdirSync(join(proc, 'sys/user'), { recursive: true });
    writeFileSync(join(proc, 'sys/user/max_user_namespaces'), '0\n');
    writeFileSync(join(proc, 'filesystems'), 'nodev\tproc\n\text4\n');
    const problems = await checkHostPrerequisites({ procDir: proc, binDirs: [join(root, 'bin')], catatonit: join(root, 'none'), uid: 1000, toolsDir: join(root, 'tools'), modulesDir: join(root, 'modules') });
    const fixes = Object.fromEntries(problems.map((p) => [p.problem, p.fix]));
    const fixFor = (pattern: RegExp) => Object.entries(fixes).find(([problem]) => pattern.test(problem))?.[1];
    assert.match(fixFor(/not running as root/) ?? '', /sudo/);
    assert.equal(fixFor(/user namespaces are disabled/), 'sysctl -w user.max_user_namespaces=15000');
    assert.equal(fixFor(/overlay/), 'modprobe overlay');
    assert.equal(fixFor(/neither crun nor runc/), 'apt-get install -y crun');
    assert.equal(fixFor(/catatonit/), 'apt-get install -y catatonit');
    assert.equal(fixFor(/btrfs-progs is missing/), 'apt-get install -y btrfs-progs');
    assert.match(fixFor(/kernel has no btrfs/) ?? '', /^modprobe btrfs/);
    assert.match(fixFor(/in-sandbox tools/) ?? '', new RegExp(`make -C \\S+/native OUT=${join(root, 'tools')}$`));
  });
});
