// exec and run over the WebSocket, against a real roostd with the OCI driver: the SDK's stdin and
// terminals, and clients that flood, never read, leave, or send garbage.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { ClientFrameKind, decodeFrameMessage, encodeFrame, FrameKind } from '@roost/contract';
import type { CommandHandle } from '@roost/sdk';
import { startDaemon, type TestDaemon } from './start-daemon.js';
import { collectOutput } from './test-deps.js';
import { waitFor } from './wait.js';

describe('exec and run over the WebSocket (real sandboxes)', () => {
  let daemon: TestDaemon;
  const execPath = '/api/v1/sandboxes/ws-box/exec';

  before(async () => {
    daemon = await startDaemon({ driver: 'oci' });
    await daemon.sdk.sandboxes.create({ name: 'ws-box' });
  });
  after(async () => {
    await daemon?.close();
  });

  /** A raw client: the test decides when it sends and whether it reads. */
  const openSocket = async (path: string, request: unknown): Promise<WebSocket> => {
    const ws = new WebSocket(`${daemon.url.replace(/^http/, 'ws')}${path}`, { headers: { authorization: `Bearer ${daemon.adminToken}` }, perMessageDeflate: false });
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    ws.send(JSON.stringify(request));
    return ws;
  };
  const frames = (ws: WebSocket) => {
    const seen: { kind: number; payload: Buffer }[] = [];
    ws.on('message', (data: Buffer) => {
      const frame = decodeFrameMessage(data);
      if (frame) seen.push({ kind: frame.kind, payload: Buffer.from(frame.payload) });
    });
    const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
    const text = (kind: number) => Buffer.concat(seen.filter((frame) => frame.kind === kind).map((frame) => frame.payload)).toString();
    return { seen, closed, text };
  };
  const processesWith = async (marker: string) =>
    (await collectOutput(daemon.sdk.exec('ws-box', ['bash', '-c', `pgrep -f '[${marker[0]}]${marker.slice(1)}' | wc -l`]))).stdout.trim();
  const outputOf = async (handle: CommandHandle) => {
    const { stdout, exitCode } = await collectOutput(handle);
    return { stdout, exit: { exitCode } };
  };

  it('SDK: stdin as a string or bytes goes whole on the POST; an async iterable and writeStdin stream over the WebSocket', async () => {
    assert.equal((await outputOf(daemon.sdk.exec('ws-box', ['tr', 'a-z', 'A-Z'], { stdin: 'hello' }))).stdout, 'HELLO');
    const bytes = randomBytes(100_000);
    const whole = await outputOf(daemon.sdk.exec('ws-box', ['base64', '-w0'], { stdin: bytes }));
    assert.equal(whole.stdout, bytes.toString('base64'));
    const streamed = await outputOf(
      daemon.sdk.run({
        script: 'wc -c',
        stdin: (async function* () {
          for (let i = 0; i < 10; i += 1) yield randomBytes(100_000);
        })(),
      }),
    );
    assert.equal(streamed.stdout.trim(), '1000000');
    const written = daemon.sdk.exec('ws-box', ['cat'], { stdin: true });
    await written.writeStdin('line one\n');
    await written.writeStdin(new TextEncoder().encode('line two\n'));
    await written.closeStdin();
    assert.deepEqual(await outputOf(written), { stdout: 'line one\nline two\n', exit: { exitCode: 0 } });
  });

  it('SDK: a terminal of the asked size whose resize reaches the process as SIGWINCH', async () => {
    const shell = daemon.sdk.exec('ws-box', ['bash', '-c', 'tty; stty size; trap "stty size; exit 4" WINCH; echo ready; while :; do sleep 0.05; done'], {
      stdin: true,
      tty: { cols: 90, rows: 20 },
    });
    let text = '';
    const exit = (async () => {
      for await (const chunk of shell.output()) {
        assert.equal(chunk.stream, 'stdout', 'a terminal has one output stream');
        text += Buffer.from(chunk.data).toString();
      }
      return shell.wait();
    })();
    await waitFor(() => text.includes('ready'), 'the shell is ready');
    assert.match(text, /^\/dev\/pts\/\d+\r\n20 90\r\n/);
    await shell.resize(132, 43);
    assert.equal((await exit).exitCode, 4);
    assert.match(text, /ready\r\n43 132\r\n/);
  });

  it('closing the socket kills the command; for a run it also removes the sandbox', async () => {
    const marker = `wskill${randomBytes(3).toString('hex')}`;
    const exec = daemon.sdk.exec('ws-box', ['bash', '-c', `echo started; exec -a ${marker} sleep 600`], { stdin: true });
    let started = false;
    const reading = (async () => {
      for await (const chunk of exec.output()) if (Buffer.from(chunk.data).toString().includes('started')) started = true;
    })();
    await waitFor(() => started, 'the command started');
    exec.kill();
    await reading;
    await waitFor(async () => (await processesWith(marker)) === '0', 'the killed command is gone');

    const run = daemon.sdk.run({ script: 'echo started; sleep 600', stdin: true });
    let runStarted = false;
    const runReading = (async () => {
      for await (const chunk of run.output()) if (Buffer.from(chunk.data).toString().includes('started')) runStarted = true;
    })();
    await waitFor(() => runStarted, 'the run started');
    const sandbox = await run.sandbox();
    run.kill();
    await runReading;
    await waitFor(async () => (await daemon.sdk.sandboxes.get(sandbox!.id)).info.status === 'error', 'the run is marked error');
    const { leftovers } = await daemon.sdk.doctor();
    assert.deepEqual(leftovers.filter((leftover) => leftover.sandboxId === sandbox!.id), [], 'the one-shot sandbox is removed');
  });

  it('pushes back on a client that floods stdin and never reads the output', async (t) => {
    // cat blocks on its unread output, then stops reading its input: both ways are full.
    const ws = await openSocket(execPath, { command: ['cat'] });
    const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
    ws.pause();
    const rssBefore = process.memoryUsage().rss;
    const chunk = encodeFrame(ClientFrameKind.stdin, randomBytes(64 * 1024));
    // Offer 512 MiB, never more than 16 MiB waiting on our side: the daemon takes what it holds.
    let offered = 0;
    const deadline = Date.now() + 4000;
    while (Date.now() < deadline && offered < 512 * 1024 * 1024) {
      if (ws.bufferedAmount < 16 * 1024 * 1024) {
        ws.send(chunk);
        offered += chunk.length;
      } else {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
    const taken = offered - ws.bufferedAmount;
    const grownMb = (process.memoryUsage().rss - rssBefore) / 1024 / 1024;
    ws.terminate();
    await closed;
    t.diagnostic(`offered ${(offered / 1048576).toFixed(0)} MiB, the daemon took ${(taken / 1048576).toFixed(1)} MiB, RSS grew ${grownMb.toFixed(0)} MB`);
    assert.ok(taken < 48 * 1024 * 1024, `the daemon took ${(taken / 1024 / 1024).toFixed(0)} MiB of stdin that nobody reads`);
    assert.ok(grownMb < 100, `RSS grew by ${grownMb.toFixed(0)} MB`);
  });

  it('slows a command whose output the client does not read, with memory flat', async (t) => {
    const marker = `wsyes${randomBytes(3).toString('hex')}`;
    const ws = await openSocket(execPath, { command: ['bash', '-c', `exec -a ${marker} yes ${marker}`] });
    const { closed } = frames(ws);
    await new Promise((resolve) => ws.once('message', resolve));
    ws.pause();
    const rssBefore = process.memoryUsage().rss;
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const grownMb = (process.memoryUsage().rss - rssBefore) / 1024 / 1024;
    ws.terminate();
    await closed;
    t.diagnostic(`RSS grew ${grownMb.toFixed(0)} MB in 3 s of unread \`yes\``);
    assert.ok(grownMb < 64, `RSS grew by ${grownMb.toFixed(0)} MB while the client did not read`);
    await waitFor(async () => (await processesWith(marker)) === '0', 'the unread command is killed with its socket');
  });

  it('answers a bad request or frame with an error frame, a missing sandbox with 404 before the upgrade, and stdin in the request with a refusal', async () => {
    const garbage = await openSocket(execPath, 'not a request');
    const garbageFrames = frames(garbage);
    await garbageFrames.closed;
    assert.match(garbageFrames.text(FrameKind.error), /VALIDATION_FAILED/);

    const both = await openSocket(execPath, { command: ['cat'], stdin: 'inline' });
    const bothFrames = frames(both);
    await bothFrames.closed;
    assert.match(bothFrames.text(FrameKind.error), /stdin comes as stdin frames/);

    const badFrame = await openSocket(execPath, { command: ['cat'] });
    const badFrames = frames(badFrame);
    badFrame.send(Buffer.from([99, 0, 0, 0, 0]));
    await badFrames.closed;
    assert.match(badFrames.text(FrameKind.error), /unknown frame kind 99/);

    const missing = daemon.sdk.exec('no-such-box', ['cat'], { stdin: true });
    await assert.rejects(missing.wait(), (error: Error & { code?: string; status?: number }) => error.code === 'SANDBOX_NOT_FOUND' && error.status === 404);

    // The daemon still serves after all of it.
    assert.equal((await outputOf(daemon.sdk.exec('ws-box', ['cat'], { stdin: 'fine' }))).stdout, 'fine');
  });
});
