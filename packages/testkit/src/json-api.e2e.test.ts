// The HTTP API from curl: exec, run and logs answer one JSON document to Accept: application/json
// and the framed stream otherwise; logs of a sandbox that never ran a script say so. A real
// roostd with the OCI driver, driven by the real curl and the real `roost`.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { decodeFrames, decodeJsonPayload, FrameKind, type ExecResult, type Frame, type RunResult } from '@roost/contract';
import { runCli } from './cli.js';
import { startDaemon, type TestDaemon } from './start-daemon.js';
import { waitFor } from './wait.js';

const maxJsonOutputBytes = 1024 * 1024;

interface CurlResult {
  exitCode: number | null;
  status: number;
  contentType: string;
  body: Buffer;
}

describe('the HTTP API from curl', () => {
  let daemon: TestDaemon;

  // curl as a user types it; `accept: null` sends no Accept header at all (curl's own is */*).
  const curl = (path: string, opts: { body?: unknown; accept?: string | null; args?: string[] } = {}): Promise<CurlResult> => {
    const args = ['-sS', '-H', `Authorization: Bearer ${daemon.adminToken}`, '-w', '%{stderr}%{http_code} %{content_type}', ...(opts.args ?? [])];
    if (opts.accept !== undefined) args.push('-H', opts.accept === null ? 'Accept:' : `Accept: ${opts.accept}`);
    if (opts.body !== undefined) args.push('-H', 'Content-Type: application/json', '-d', JSON.stringify(opts.body));
    const child = spawn('curl', [...args, `${daemon.url}${path}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    return new Promise((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (exitCode) => {
        const [status, contentType = ''] = stderr.trim().split(' ');
        resolve({ exitCode, status: Number(status), contentType, body: Buffer.concat(stdout) });
      });
    });
  };
  const curlJson = async <T>(path: string, body?: unknown): Promise<{ status: number; contentType: string; json: T }> => {
    const result = await curl(path, { body, accept: 'application/json' });
    assert.equal(result.exitCode, 0);
    return { status: result.status, contentType: result.contentType, json: JSON.parse(result.body.toString('utf8')) as T };
  };
  const exec = (script: string) => curlJson<ExecResult>('/api/v1/sandboxes/box/exec', { command: ['bash', '-c', script] });

  before(async () => {
    daemon = await startDaemon({ driver: 'oci', config: { http: { maxJsonOutputBytes } } });
    await daemon.sdk.sandboxes.create({ name: 'box' });
  });
  after(async () => {
    await daemon?.close();
  });

  it('exec answers stdout, stderr and the exit code in one document', async () => {
    const { status, contentType, json } = await exec('echo out; echo "ünïcode err" >&2; exit 3');
    assert.equal(status, 200);
    assert.match(contentType, /^application\/json/);
    assert.deepEqual(json, { exitCode: 3, stdout: 'out\n', stderr: 'ünïcode err\n', stdoutEncoding: 'utf8', stderrEncoding: 'utf8', truncated: false });
  });

  it('gives output that is not UTF-8 in base64, byte-exact', async () => {
    const bytes = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0xff, 0xfe, 0xc3]);
    const printf = [...bytes].map((byte) => `\\x${byte.toString(16).padStart(2, '0')}`).join('');
    const { json } = await exec(`printf '${printf}'; echo text >&2`);
    assert.equal(json.stdoutEncoding, 'base64');
    assert.deepEqual(Buffer.from(json.stdout, 'base64'), bytes);
    assert.equal(json.stderrEncoding, 'utf8');
    assert.equal(json.stderr, 'text\n');
  });

  it('run answers the script\'s result with its sandbox as the run left it; logs answers the same output', async () => {
    const run = await curlJson<RunResult>('/api/v1/runs', { script: 'echo ran; echo warn >&2; exit 4', name: 'json-run' });
    assert.equal(run.status, 200);
    assert.equal(run.json.exitCode, 4);
    assert.equal(run.json.stdout, 'ran\n');
    assert.equal(run.json.stderr, 'warn\n');
    assert.equal(run.json.sandbox.name, 'json-run');
    assert.equal(run.json.sandbox.status, 'completed');
    assert.equal(run.json.sandbox.exitCode, 4);

    const logs = await curlJson<ExecResult>('/api/v1/sandboxes/json-run/logs');
    assert.equal(logs.status, 200);
    assert.deepEqual(logs.json, { exitCode: 4, stdout: 'ran\n', stderr: 'warn\n', stdoutEncoding: 'utf8', stderrEncoding: 'utf8', truncated: false });

    // A kept (-p) sandbox keeps its logs too, and its status after the run.
    const kept = await curlJson<RunResult>('/api/v1/runs', { script: 'echo kept', name: 'json-kept', persistent: true });
    assert.equal(kept.json.sandbox.status, 'running');
    assert.equal((await curlJson<ExecResult>('/api/v1/sandboxes/json-kept/logs')).json.stdout, 'kept\n');
  });

  it('streams frames as before to */* (curl\'s default) and to a client that sends no Accept', async () => {
    for (const accept of [undefined, null, 'application/json;q=0.5, */*']) {
      const result = await curl('/api/v1/sandboxes/box/exec', { body: { command: ['bash', '-c', 'echo out; echo err >&2; exit 3'] }, accept });
      assert.equal(result.status, 200);
      assert.equal(result.contentType, 'application/vnd.roost.stream', `Accept ${accept}`);
      const frames: Frame[] = [];
      for await (const frame of decodeFrames((async function* () { yield new Uint8Array(result.body); })())) frames.push(frame);
      const text = (kind: number) => frames.filter((frame) => frame.kind === kind).map((frame) => Buffer.from(frame.payload).toString()).join('');
      assert.equal(text(FrameKind.stdout), 'out\n');
      assert.equal(text(FrameKind.stderr), 'err\n');
      assert.equal(frames.at(-1)?.kind, FrameKind.exit);
      assert.deepEqual(decodeJsonPayload(frames.at(-1)!), { exitCode: 3 });
    }
  });

  it('keeps at most the cap of output, reads and drops the rest, and roostd\'s memory stays flat', async (t) => {
    const outputBytes = 256 * 1024 * 1024;
    // The first big answer grows the heap and the buffer pools once (~40 MiB here); measure after it.
    assert.equal((await exec(`yes | head -c ${32 * 1024 * 1024}`)).json.truncated, true);
    const rssBefore = process.memoryUsage().rss;
    let rssPeak = rssBefore;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), 20);
    try {
      const { json } = await exec(`yes | head -c ${outputBytes}; echo done >&2`);
      assert.equal(json.exitCode, 0);
      assert.equal(json.truncated, true);
      assert.equal(json.stdout.length, maxJsonOutputBytes);
      assert.equal(json.stdout, 'y\n'.repeat(maxJsonOutputBytes / 2));
      assert.equal(json.stderr, 'done\n');
    } finally {
      clearInterval(sampler);
    }
    const grownMiB = (rssPeak - rssBefore) / 1024 / 1024;
    t.diagnostic(`RSS grew ${grownMiB.toFixed(1)} MiB at most while ${outputBytes / 1024 / 1024} MiB of output passed`);
    // Held whole, the output alone would be 256 MiB (and its JSON as much again).
    assert.ok(grownMiB < 48, `RSS grew ${grownMiB.toFixed(0)} MiB for ${outputBytes / 1024 / 1024} MiB of output`);
  });

  it('kills the command when the client disconnects before the end', async () => {
    const result = await curl('/api/v1/sandboxes/box/exec', {
      body: { command: ['bash', '-c', 'echo $$ > /tmp/json-sleeper; exec sleep 600'] },
      accept: 'application/json',
      args: ['--max-time', '3'],
    });
    assert.equal(result.exitCode, 28, 'curl gave up at its --max-time');
    assert.equal((await exec('test -s /tmp/json-sleeper')).json.exitCode, 0, 'the sleeper had started');
    await waitFor(async () => (await exec('kill -0 "$(cat /tmp/json-sleeper)"')).json.exitCode !== 0, 'the sleeper is gone');
  });

  it('refuses logs of a sandbox that never ran a script, in JSON, in the stream\'s place and in the CLI', async () => {
    await exec('echo exec output is not logged');
    for (const accept of ['application/json', undefined]) {
      const result = await curl('/api/v1/sandboxes/box/logs', { accept });
      assert.equal(result.status, 404, `Accept ${accept}`);
      assert.match(result.contentType, /^application\/json/);
      const { error } = JSON.parse(result.body.toString()) as { error: { code: string; message: string; hint: string } };
      assert.equal(error.code, 'NO_RUN_LOGS');
      assert.match(error.message, /sandbox box has no logs/);
      assert.match(error.hint, /roost run/);
      assert.match(error.hint, /roost exec/);
    }

    const cli = await runCli(['logs', 'box'], { env: { ROOST_API_URL: daemon.url, ROOST_API_TOKEN: daemon.adminToken } });
    assert.equal(cli.exitCode, 1);
    assert.equal(cli.stdout, '');
    assert.match(cli.stderr.split('\n')[0], /^roost: sandbox box has no logs: it never ran a script with `roost run`/);
  });
});
