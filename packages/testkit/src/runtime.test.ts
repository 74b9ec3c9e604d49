// The conformance suite against the fake and against the real OCI driver (crun or runc).
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createImageStore, createOciRuntime, findResidue } from '@roost/runtime-oci';
import { FakeRuntime } from './fake-runtime.js';
import { silentLogger } from './test-deps.js';
import { runtimeConformance } from './runtime-conformance.js';


runtimeConformance({
  name: 'FakeRuntime',
  isolation: false,
  realTerminal: false,
  newRuntime: async () => ({ runtime: new FakeRuntime(), image: 'debian', cleanup: async () => {} }),
});

runtimeConformance({
  name: 'runtime-oci',
  isolation: true,
  realTerminal: true,
  // setup installs lxcfs; the driver starts its own when the host runs none.
  procViews: true,
  newRuntime: async () => {
    const stateDir = await mkdtemp(join(tmpdir(), 'roost-oci-'));
    const images = createImageStore({ logger: silentLogger });
    await images.ensureDefaultImage();
    const runtime = await createOciRuntime({ stateDir, images, logger: silentLogger });
    return {
      runtime,
      image: 'debian',
      cleanup: async () => {
        // Residue of the runtime itself: close() unmounted its own lxcfs (no sandbox was left).
        const left = (await readFile('/proc/self/mounts', 'utf8')).split('\n').filter((l) => l.split(' ')[1]?.startsWith(`${stateDir}/`));
        if (left.length) throw new Error(`mounts left under ${stateDir} after close: ${left.join('; ')}`);
        await rm(stateDir, { recursive: true, force: true });
      },
      residue: (id: string) => findResidue(stateDir, id),
    };
  },
});
