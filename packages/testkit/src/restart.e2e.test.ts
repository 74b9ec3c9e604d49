// kill -9 of roostd while sandboxes run, then a new start: persistent sandboxes are adopted with
// their processes untouched; one-shot runs cut short are removed and marked.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { Roost } from '@roost/sdk';
import { sandboxRootHostUid } from './host-uids.js';
import { freePort, waitFor } from './wait.js';

const roostdPath = fileURLToPath(new URL('../../../apps/roostd/dist/main.js', import.meta.url));


async function startRoostd(dataDir: string, port: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, [roostdPath], {
    env: {
      ...process.env, ROOST_DATA_DIR: dataDir, ROOST_HTTP_ADDR: `127.0.0.1:${port}`, ROOST_SSH_ADDR: '127.0.0.1:0',
      // The workspace pool is preallocated: a test needs no 20 GiB.
      ROOST_WORKSPACE_POOL_BYTES: String(2 * 1024 ** 3),
    },
    stdio: 'ignore',
  });
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const up = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false);
    if (up) return child;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  child.kill('SIGKILL');
  throw new Error('roostd did not start');
}

describe('roostd restart after kill -9', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'roost-restart-'));
  let daemon: ChildProcess | undefined;
  after(async () => {
    if (daemon && daemon.exitCode === null) {
      const roost = new Roost({ apiUrl: `http://127.0.0.1:${port}`, token: readFileSync(join(dataDir, 'admin-token'), 'utf8').trim() });
      for (const sandbox of await roost.sandboxes.list({ all: true }).catch(() => [])) await roost.sandboxes.remove(sandbox.id).catch(() => {});
      daemon.kill('SIGTERM');
      await new Promise((resolve) => daemon!.on('close', resolve));
    }
    rmSync(dataDir, { recursive: true, force: true });
  });
  let port = 0;

  it('adopts persistent sandboxes with their processes and removes cut-short runs', async () => {
    port = await freePort();
    daemon = await startRoostd(dataDir, port);
    const token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
    const roost = new Roost({ apiUrl: `http://127.0.0.1:${port}`, token });

    const keeper = await roost.sandboxes.create({ name: 'keeper' });
    await keeper.exec(['bash', '-c', 'nohup sleep 1000 >/dev/null 2>&1 & echo $! > /root/sleeper.pid']).wait();
    const sleeperPid = (await output(keeper.exec(['cat', '/root/sleeper.pid']))).trim();
    const keeperUid = sandboxRootHostUid(dataDir, keeper.id);
    const run = roost.run({ script: 'echo started; sleep 1000', name: 'cut-short' });
    const runSandbox = await run.sandbox();
    assert.ok(runSandbox);

    daemon.kill('SIGKILL');
    await new Promise((resolve) => daemon!.on('close', resolve));
    run.kill();
    // As if the keeper had been made by a roostd from before exec profiles were saved.
    rmSync(join(dataDir, 'runtime', 'sandboxes', keeper.id, 'exec.json'));

    daemon = await startRoostd(dataDir, port);
    const kept = await roost.sandboxes.get('keeper');
    assert.equal(kept.info.status, 'running');
    const alive = await output(kept.exec(['bash', '-c', `kill -0 ${sleeperPid} && echo alive`]));
    assert.equal(alive, 'alive\n', 'the process started before the crash still runs');
    assert.equal(sandboxRootHostUid(dataDir, kept.id), keeperUid, 'the adopted sandbox keeps its host uid range');
    const cut = await roost.sandboxes.get(runSandbox.id);
    assert.equal(cut.info.status, 'error');
    assert.match(cut.info.statusReason ?? '', /restarted/);
    await assert.rejects(cut.exec(['true']).wait(), { code: 'SANDBOX_NOT_RUNNING' });

    // The warm pool (on by default, 4 members) of the killed daemon was removed, not piled up:
    // what the runtime holds is the keeper and one pool's worth, also after a clean restart.
    const bundles = () => readdirSync(join(dataDir, 'runtime', 'sandboxes')).filter((name) => name.startsWith('sb_'));
    await waitFor(() => bundles().length === 5, 'the pool refilled to 4 beside the keeper');
    // Its range stays the keeper's in the store: the refilled members each got another one.
    await waitFor(() => bundles().every((id) => existsSync(join(dataDir, 'runtime', 'sandboxes', id, 'init.pid'))), 'every member has its init');
    const uids = bundles().map((id) => sandboxRootHostUid(dataDir, id));
    assert.equal(new Set(uids).size, 5, `five sandboxes, five host uids: ${uids.join(' ')}`);
    daemon.kill('SIGTERM');
    await new Promise((resolve) => daemon!.on('close', resolve));
    assert.deepEqual(bundles(), [kept.id], 'a clean stop removes the members nobody claimed');
    daemon = await startRoostd(dataDir, port);
    await waitFor(() => bundles().length === 5, 'the pool refilled after a clean restart');
    const doctor = await roost.doctor();
    const ours = new Set(bundles());
    assert.deepEqual(doctor.leftovers.filter((leftover) => ours.has(leftover.sandboxId) || leftover.what.includes(dataDir)), []);
  });
});

async function output(handle: ReturnType<Roost['exec']>): Promise<string> {
  let text = '';
  for await (const chunk of handle.output()) text += Buffer.from(chunk.data).toString();
  await handle.wait();
  return text;
}
