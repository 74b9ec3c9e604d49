import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { engineErrors, execExitStatus } from './engine-failure.js';

const line = (msg: string, level = 'error') => `${JSON.stringify({ msg, level, time: '2026-12-02T16:24:47Z' })}\n`;

describe('exit status of an exec the engine could not start', () => {
  it('a missing command exits 127, as in a shell and docker exec (crun and runc wording)', () => {
    assert.deepEqual(execExitStatus({ exitCode: 255 }, line('executable file `nosuchcmd` not found in $PATH: No such file or directory')), { exitCode: 127 });
    assert.deepEqual(execExitStatus({ exitCode: 255 }, line('runc exec failed: unable to start container process: exec: "x": executable file not found in $PATH')), { exitCode: 127 });
  });

  it('a command that cannot be started, or a working directory that is not there, exits 126', () => {
    assert.deepEqual(execExitStatus({ exitCode: 255 }, line('open executable: Permission denied')), { exitCode: 126 });
    assert.deepEqual(execExitStatus({ exitCode: 255 }, line('chdir `/nope`: No such file or directory')), { exitCode: 126 });
    assert.deepEqual(execExitStatus({ exitCode: 255 }, line('runc exec failed: unable to start container process: chdir to cwd ("/nope") set in config.json failed: no such file or directory')), { exitCode: 126 });
  });

  it("the command's own 255, other codes and signals are left alone; warnings and junk lines decide nothing", () => {
    assert.deepEqual(execExitStatus({ exitCode: 255 }, ''), { exitCode: 255 });
    assert.deepEqual(execExitStatus({ exitCode: 255 }, line('cgroup v1 is deprecated', 'warning')), { exitCode: 255 });
    assert.deepEqual(execExitStatus({ exitCode: 255 }, 'executable file not found\n{not json'), { exitCode: 255 });
    assert.deepEqual(execExitStatus({ exitCode: 1 }, line('executable file `x` not found')), { exitCode: 1 });
    assert.deepEqual(execExitStatus({ exitCode: 137, signal: 'SIGKILL' }, line('x not found')), { exitCode: 137, signal: 'SIGKILL' });
    assert.deepEqual(engineErrors(`${line('a')}\n\n${line('b', 'info')}${line('c', 'fatal')}`), ['a', 'c']);
  });
});
