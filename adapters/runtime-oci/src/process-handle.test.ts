// processHandle over a plain host child (no engine): what it does with its files and with
// signals it cannot send.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { processHandle } from './process-handle.js';

describe('processHandle', () => {
  let dir: string;
  before(async () => {
    dir = await fs.mkdtemp(path.join(tmpdir(), 'roost-handle-'));
  });
  after(() => fs.rm(dir, { recursive: true, force: true }));

  it('removes the process file (it may hold secrets) once the pid file shows the process started', async () => {
    const pidFile = path.join(dir, 'a.pid');
    const processFile = path.join(dir, 'a.process.json');
    await fs.writeFile(processFile, '{"env":["SECRET=x"]}', { mode: 0o600 });
    // Plays the engine: writes the pid file after a moment, then runs on.
    const child = spawn('sh', ['-c', `sleep 0.2; echo $$ > ${pidFile}; exec sleep 30`], { stdio: ['ignore', 'pipe', 'pipe'] });
    const handle = processHandle(child, pidFile, undefined, processFile);
    try {
      assert.ok(existsSync(processFile), 'kept until the engine has read it');
      const deadline = Date.now() + 5000;
      while (existsSync(processFile) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
      assert.ok(!existsSync(processFile), 'removed while the process still runs');
    } finally {
      handle.kill('SIGKILL');
      await handle.wait();
    }
  });

  it('removes the process file when the engine exits without starting anything', async () => {
    const processFile = path.join(dir, 'b.process.json');
    await fs.writeFile(processFile, '{}', { mode: 0o600 });
    const child = spawn('false', [], { stdio: ['ignore', 'pipe', 'pipe'] });
    const handle = processHandle(child, path.join(dir, 'b.pid'), undefined, processFile);
    assert.equal((await handle.wait()).exitCode, 1);
    const deadline = Date.now() + 2000;
    while (existsSync(processFile) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.ok(!existsSync(processFile));
  });

  it('ignores a signal name it does not know (an SSH client may send any) instead of throwing later from a timer', async () => {
    // No pid file: kill() retries for 2 s, then signals the engine itself, where Node throws
    // ERR_UNKNOWN_SIGNAL for a bad name. An uncaught throw there would end this test process.
    const child = spawn('sleep', ['30'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const handle = processHandle(child, path.join(dir, 'never.pid'));
    const uncaught: Error[] = [];
    const onUncaught = (error: Error) => uncaught.push(error);
    process.on('uncaughtException', onUncaught);
    try {
      assert.doesNotThrow(() => handle.kill('SIGBOGUS' as NodeJS.Signals));
      await new Promise((resolve) => setTimeout(resolve, 2200));
      assert.deepEqual(uncaught, []);
      assert.equal(child.exitCode, null, 'still running: the bad signal was not sent as anything else');
    } finally {
      process.off('uncaughtException', onUncaught);
      child.kill('SIGKILL');
      await handle.wait();
    }
  });
});
