// What the host sees of a sandbox of the OCI driver, for tests of host id ranges.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** Host uid of a sandbox's init (its root), from /proc on the host; `dataDir` is roostd's. */
export function sandboxRootHostUid(dataDir: string, id: string): number {
  const pid = readFileSync(join(dataDir, 'runtime', 'sandboxes', id, 'init.pid'), 'utf8').trim();
  return Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
}
