// The conformance suite against the fake and against the real OCI driver (crun or runc).
import { mkdtemp, rm } from 'node:fs/promises';
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
  newRuntime: async () => {
    const stateDir = await mkdtemp(join(tmpdir(), 'roost-oci-'));
    const images = createImageStore({ logger: silentLogger });
    await images.ensureDefaultImage();
    const runtime = await createOciRuntime({ stateDir, images, logger: silentLogger });
    return {
      runtime,
      image: 'debian',
      cleanup: () => rm(stateDir, { recursive: true, force: true }),
      residue: (id: string) => findResidue(stateDir, id),
    };
  },
});
