import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { execOptsOf, runOptsOf } from './command-opts.js';

describe('exec and run requests to core options', () => {
  it('decodes stdin given whole, as UTF-8 or base64 bytes, and refuses bad base64', () => {
    assert.deepEqual(execOptsOf({ command: ['cat'], stdin: 'hé' }).stdin, Buffer.from('hé', 'utf8'));
    const bytes = Buffer.from([0, 255, 10, 13]);
    assert.deepEqual(runOptsOf({ script: 'cat', stdin: bytes.toString('base64'), stdinEncoding: 'base64' }).stdin, bytes);
    assert.throws(() => execOptsOf({ command: ['cat'], stdin: 'not base64!', stdinEncoding: 'base64' }), { code: 'VALIDATION_FAILED' });
    assert.equal(execOptsOf({ command: ['cat'] }).stdin, undefined, 'no stdin: EOF at once');
  });

  it('streams stdin on the WebSocket and refuses it in the request there; a terminal gets a default TERM', () => {
    assert.equal(runOptsOf({ script: 'cat' }, true).stdin, 'stream');
    assert.throws(() => execOptsOf({ command: ['cat'], stdin: 'x' }, true), /stdin frames/);
    assert.deepEqual(execOptsOf({ command: ['bash'], tty: { cols: 80, rows: 24 } }, true).tty, { cols: 80, rows: 24, term: 'xterm-256color' });
    assert.equal(execOptsOf({ command: ['bash'], tty: { cols: 1, rows: 2, term: 'vt100' } }).tty?.term, 'vt100');
  });
});
