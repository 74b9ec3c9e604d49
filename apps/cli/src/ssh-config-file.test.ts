// The managed block in ~/.ssh/config: one, replaced in place, every other byte kept.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { blockBegin, blockEnd, withManagedBlock, writeManagedBlock } from './ssh-config-file.js';

const block = (n: number) => `${blockBegin} (http://x) ---\nHost roost-*\n  Port ${n}\nHost *\n${blockEnd}`;

describe('the roost block in ~/.ssh/config', () => {
  it('goes first in a file without one, and keeps the file after it byte for byte', () => {
    const user = 'ForwardAgent no\r\nHost example\n\tUser bob  \n# trailing comment without newline';
    const next = withManagedBlock(user, block(1));
    assert.equal(next, `${block(1)}\n\n${user}`);
    assert.equal(withManagedBlock('', block(1)), `${block(1)}\n`);
  });

  it('is replaced where it stands, and several blocks (piled up by hand) become one', () => {
    const before = 'Host a\n  User a\n';
    const after = '\nHost b\n  User b\n';
    const piled = `${before}${block(1)}\n${after}${block(2)}\n`;
    const next = withManagedBlock(piled, block(3));
    assert.equal(next, `${before}${block(3)}\n${after}`);
    assert.equal(withManagedBlock(next, block(3)), next, 'a second run changes nothing');
  });

  it('refuses a block whose END line was deleted, rather than guess which lines are the user\'s', () => {
    assert.throws(() => withManagedBlock(`${blockBegin} ---\nHost mine\n`, block(1)), /no "# --- END roost ssh-config ---" line/);
  });

  it('writes atomically: mode kept, a symlinked config written where it points, ~/.ssh made 0700', async () => {
    const home = mkdtempSync(join(tmpdir(), 'roost-sshcfg-'));
    try {
      const fresh = join(home, '.ssh', 'config');
      assert.deepEqual(await writeManagedBlock(fresh, block(1)), { changed: true, legacy: false });
      assert.equal(statSync(join(home, '.ssh')).mode & 0o777, 0o700);
      assert.equal(statSync(fresh).mode & 0o777, 0o600);
      assert.deepEqual(await writeManagedBlock(fresh, block(1)), { changed: false, legacy: false });

      const dotfiles = join(home, 'dotfiles-ssh-config');
      writeFileSync(dotfiles, '# Roost sandboxes on http://x (roost ssh-config)\nHost roost-old\n', { mode: 0o640 });
      rmSync(fresh);
      symlinkSync(dotfiles, fresh);
      assert.deepEqual(await writeManagedBlock(fresh, block(2)), { changed: true, legacy: true });
      assert.equal(readFileSync(dotfiles, 'utf8'), `${block(2)}\n\n# Roost sandboxes on http://x (roost ssh-config)\nHost roost-old\n`);
      assert.equal(statSync(dotfiles).mode & 0o777, 0o640);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
