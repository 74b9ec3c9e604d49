// The sandbox-name rule lives twice, because core imports nothing internal: in core (enforced on
// create) and in the contract (the CLI checks names a server sends). They must agree.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sandboxNamePattern } from '@roost/contract/names';
import { assertValidSandboxName } from '@roost/core';

describe('sandbox names', () => {
  it('core and the contract accept and refuse the same names', () => {
    const samples = ['a', 'dev', 'my-box-2', '0', 'a'.repeat(63), 'a'.repeat(64), '', '-box', 'box-', 'Box', 'my_box', 'my.box', 'box+root', '-oProxyCommand=x', 'bad\nname', 'ümlaut'];
    let accepted = 0;
    for (const name of samples) {
      let coreAccepts = true;
      try {
        assertValidSandboxName(name);
      } catch {
        coreAccepts = false;
      }
      assert.equal(sandboxNamePattern.test(name), coreAccepts, JSON.stringify(name));
      if (coreAccepts) accepted++;
    }
    assert.equal(accepted, 5, 'the samples hold both accepted and refused names');
  });
});
