import { existsSync } from 'node:fs';
import path from 'node:path';
import { cgroupDirs } from './cgroups.js';
import { vethName } from './network.js';
import { mountsUnder } from './overlay.js';

/** What a sandbox left on the host: empty after a complete destroy. For tests and reconciliation. */
export async function findResidue(stateDir: string, id: string): Promise<string[]> {
  const bundle = path.join(stateDir, 'sandboxes', id);
  const left: string[] = [];
  for (const m of await mountsUnder(bundle)) left.push(`mount ${m}`);
  if (existsSync(bundle)) left.push(`bundle ${bundle}`);
  if (existsSync(path.join(stateDir, 'oci-state', id))) left.push(`engine state ${id}`);
  const veth = vethName(id);
  if (existsSync(`/sys/class/net/${veth}`)) left.push(`veth ${veth}`);
  for (const dir of await cgroupDirs(id)) left.push(`cgroup ${dir}`);
  return left;
}
