// Host id ranges through a real roostd on the OCI driver: sandboxes get different host uids, and
// a removed sandbox's range goes to the next one. (Adoption after kill -9 keeps a sandbox's range:
// restart.e2e.test.ts; the driver's side: adapters/runtime-oci/src/id-ranges.e2e.test.ts.)
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sandboxRootHostUid } from './host-uids.js';
import { startDaemon, type TestDaemon } from './start-daemon.js';

describe('host id ranges through roostd (OCI driver)', () => {
  let daemon: TestDaemon;
  before(async () => {
    daemon = await startDaemon({ driver: 'oci' });
  });
  after(async () => {
    await daemon?.close();
  });

  it('gives each sandbox its own host uid and reuses a removed sandbox\'s range', async () => {
    const a = await daemon.sdk.sandboxes.create({ name: 'range-a' });
    const b = await daemon.sdk.sandboxes.create({ name: 'range-b' });
    const uidA = sandboxRootHostUid(daemon.dataDir, a.id);
    const uidB = sandboxRootHostUid(daemon.dataDir, b.id);
    assert.ok(uidA >= 2_000_000 && uidB >= 2_000_000, `own ranges, not the shared 1000000: ${uidA}, ${uidB}`);
    assert.equal(Math.abs(uidA - uidB) % 65_536, 0);
    assert.notEqual(uidA, uidB);

    await a.remove();
    const c = await daemon.sdk.sandboxes.create({ name: 'range-c' });
    assert.equal(sandboxRootHostUid(daemon.dataDir, c.id), uidA, 'the freed range is the lowest free one');
    const inside = c.exec(['bash', '-c', 'id -u; stat -c %u /etc/passwd']);
    let out = '';
    for await (const chunk of inside.output()) out += Buffer.from(chunk.data).toString();
    assert.equal((await inside.wait()).exitCode, 0);
    assert.equal(out, '0\n0\n', 'root inside, image root-owned');
  });
});
