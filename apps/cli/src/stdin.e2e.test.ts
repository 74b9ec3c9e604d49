// End to end: stdin, terminals and exec's option parsing, through the real `roost` binary
// against a real roostd with the OCI driver.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { cliPath, runCli, runProcess, startDaemon, waitFor, type TestDaemon } from '@roost/testkit';

describe('roost run and exec: stdin, terminals, options', () => {
  let daemon: TestDaemon;
  let env: Record<string, string>;
  const roost = (args: string[], opts: Parameters<typeof runCli>[1] = {}) => runCli(args, { ...opts, env: { ...env, ...opts.env } });

  before(async () => {
    daemon = await startDaemon({ driver: 'oci' });
    env = { ROOST_API_URL: daemon.url, ROOST_API_TOKEN: daemon.adminToken };
    await daemon.sdk.sandboxes.create({ name: 'box' });
  });
  after(async () => {
    await daemon?.close();
  });

  it('echo hi | roost run cat prints hi; the one-shot sandbox is gone afterwards', async () => {
    const result = await roost(['run', '--json', 'cat'], { stdin: 'hi\n' });
    assert.equal(result.exitCode, 0, result.stderr);
    const output = JSON.parse(result.stdout) as { stdout: string; sandbox: { id: string } };
    assert.equal(output.stdout, 'hi\n');
    await waitFor(async () => (await daemon.sdk.sandboxes.get(output.sandbox.id)).info.status === 'completed', 'the run completed');
    const plain = await roost(['run', 'cat'], { stdin: 'hi\n' });
    assert.equal(plain.stdout, 'hi\n');
  });

  it('echo hi | roost exec box cat prints hi, and binary stdin arrives byte-exact', async () => {
    assert.equal((await roost(['exec', 'box', 'cat'], { stdin: 'hi\n' })).stdout, 'hi\n');
    const bytes = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), randomBytes(300_000)]);
    const result = await roost(['exec', 'box', 'base64 -w0'], { stdin: bytes });
    assert.equal(result.exitCode, 0, result.stderr);
    assert.equal(result.stdout, bytes.toString('base64'));
  });

  it('streams 20 MiB of stdin through sha256sum', async () => {
    const input = randomBytes(20 * 1024 * 1024);
    const result = await roost(['exec', 'box', 'sha256sum'], { stdin: input });
    assert.equal(result.exitCode, 0, result.stderr);
    assert.equal(result.stdout.split(' ')[0], createHash('sha256').update(input).digest('hex'));
  });

  it('a closed stdin is EOF to the command; a terminal or /dev/null stdin is not sent at all', async () => {
    assert.equal((await roost(['exec', 'box', 'wc -c'])).stdout.trim(), '0');
    assert.equal((await roost(['run', 'wc -c'])).stdout.trim(), '0');
    // /dev/null is a character device, as a terminal is: nothing is sent and nothing waits for it.
    const devNull = await new Promise<{ code: number | null; stdout: string }>((resolve, reject) => {
      const child = spawn(process.execPath, [cliPath, 'exec', 'box', 'cat; echo done'], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout }));
    });
    assert.deepEqual(devNull, { code: 0, stdout: 'done\n' });
  });

  it('ends when the command does, even if its stdin pipe stays open and silent', async () => {
    const child = spawn(process.execPath, [cliPath, 'exec', 'box', 'echo done'], { env: { PATH: process.env.PATH, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    try {
      let stdout = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      const code = await new Promise<number | null>((resolve, reject) => {
        child.on('error', reject);
        child.on('close', resolve);
      });
      assert.deepEqual({ code, stdout }, { code: 0, stdout: 'done\n' });
    } finally {
      child.kill();
    }
  });

  it('exec -t gives the command a terminal of the local size, and -t without a terminal is a usage error', async () => {
    const command = `stty cols 100 rows 30; ${process.execPath} ${cliPath} exec -t box 'tty; stty size; echo "TERM=$TERM"'`;
    const result = await runProcess('script', ['-qec', command, '/dev/null'], { env: { ...process.env, ...env, TERM: 'xterm-256color' } });
    assert.equal(result.exitCode, 0, result.stdout + result.stderr);
    // Both terminals turn LF into CRLF (the local one is not raw without -i); it shows the same.
    assert.match(result.stdout, /\/dev\/pts\/\d+\r*\n30 100\r*\nTERM=xterm-256color/);
    const refused = await roost(['exec', '-t', 'box', 'tty']);
    assert.equal(refused.exitCode, 2);
    assert.match(refused.stderr, /^roost: -t needs a terminal, and the input device is not a TTY/);
  });

  it('exec -it: keys reach the command through the terminal and the exit code comes back', async () => {
    // script's own pty is our terminal; what we type into it reaches `read` inside.
    const command = `${process.execPath} ${cliPath} exec -it box 'read -r line; echo "got $line"; exit 7'`;
    const result = await runProcess('script', ['-qec', command, '/dev/null'], { env: { ...process.env, ...env }, input: 'typed\n' });
    assert.match(result.stdout, /got typed/);
    assert.equal(result.exitCode, 7, result.stdout + result.stderr);
  });

  it('takes exec options anywhere before --, passes nothing of them to the command, and refuses an unknown one with a hint', async () => {
    const json = await roost(['exec', 'box', '--json', 'echo x']);
    assert.equal(json.exitCode, 0, json.stderr);
    assert.equal((JSON.parse(json.stdout) as { stdout: string }).stdout, 'x\n');
    assert.equal((await roost(['exec', 'box', '-e', 'A=1', 'echo $A'])).stdout, '1\n');
    assert.equal((await roost(['exec', '-e', 'A=2', 'box', '--', 'sh', '-c', 'echo $A'])).stdout, '2\n');
    assert.equal((await roost(['exec', 'box', '--', 'ls', '-d', '/'])).stdout, '/\n');
    assert.equal((await roost(['exec', 'box', 'ls', '-d', '/'])).exitCode, 2);
    const unknown = await roost(['exec', 'box', 'ls', '-la']);
    assert.equal(unknown.exitCode, 2);
    assert.match(unknown.stderr, /^roost: unknown option '-la': .* after --.*quote/);
    // One argument is a bash script, several are argv.
    assert.equal((await roost(['exec', 'box', 'echo a | tr a b'])).stdout, 'b\n');
    assert.equal((await roost(['exec', 'box', 'echo', 'a', '|', 'tr'])).stdout, 'a | tr\n');
  });

  it('Ctrl-C on exec with stdin streaming kills the command in the sandbox', async () => {
    let child: import('node:child_process').ChildProcess | undefined;
    let ready!: () => void;
    const started = new Promise<void>((resolve) => (ready = resolve));
    const marker = `sleep-${randomBytes(3).toString('hex')}`;
    const pending = runCli(['exec', 'box', `echo ready; exec -a ${marker} sleep 600`], {
      env,
      onSpawn: (c) => {
        child = c;
        c.stdout!.on('data', (chunk: Buffer) => chunk.toString().includes('ready') && ready());
      },
    });
    await started;
    child!.kill('SIGINT');
    assert.equal((await pending).exitCode, 130);
    await waitFor(async () => (await roost(['exec', 'box', `pgrep -f '[${marker[0]}]${marker.slice(1)}' || true`])).stdout === '', 'the command is gone');
  });
});
