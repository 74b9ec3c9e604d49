import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import type { Leftover } from '@roost/core';
import { cgroupDirs } from './cgroups.js';
import { CGROUP_PARENT } from './constants.js';
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

/**
 * Residue of sandboxes that `held` does not contain: their cgroups, host veths (found by the
 * `roost:<id>` alias) and bundle dirs with their mounts. Cgroups and veths are host-wide, so
 * another roostd's sandboxes on the same host show up here too.
 */
export async function findOrphans(stateDir: string, held: Set<string>): Promise<Leftover[]> {
  const leftovers: Leftover[] = [];
  const cgroupRoot = '/sys/fs/cgroup';
  for (const hierarchy of ['', ...(await fs.readdir(cgroupRoot).catch(() => [] as string[]))]) {
    const parent = path.join(cgroupRoot, hierarchy, CGROUP_PARENT);
    for (const entry of await fs.readdir(parent, { withFileTypes: true }).catch(() => [])) {
      if (entry.isDirectory() && !held.has(entry.name)) leftovers.push({ sandboxId: entry.name, what: `cgroup ${path.join(parent, entry.name)}` });
    }
  }
  for (const link of await fs.readdir('/sys/class/net').catch(() => [] as string[])) {
    const alias = (await fs.readFile(`/sys/class/net/${link}/ifalias`, 'utf8').catch(() => '')).trim();
    const id = alias.startsWith('roost:') ? alias.slice('roost:'.length) : undefined;
    if (id && !held.has(id)) leftovers.push({ sandboxId: id, what: `veth ${link}` });
  }
  const sandboxesDir = path.join(stateDir, 'sandboxes');
  for (const id of await fs.readdir(sandboxesDir).catch(() => [] as string[])) {
    if (held.has(id)) continue;
    for (const what of await findResidue(stateDir, id)) {
      if (!what.startsWith('cgroup') && !what.startsWith('veth')) leftovers.push({ sandboxId: id, what });
    }
  }
  return leftovers;
}
