import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import type { Leftover } from '@roost/core';
import { cgroupDirs } from './cgroups.js';
import { readInstance, vethName, type Instance } from './instance.js';
import { mountsUnder } from './overlay.js';

/**
 * What a sandbox left on the host: empty after a complete destroy. For tests and
 * reconciliation. `stateDir` names the instance (its instance.json) whose names to look for.
 */
export async function findResidue(stateDir: string, id: string, instance: Instance = readInstance(stateDir)): Promise<string[]> {
  const bundle = path.join(stateDir, 'sandboxes', id);
  const left: string[] = [];
  for (const m of await mountsUnder(bundle)) left.push(`mount ${m}`);
  if (existsSync(bundle)) left.push(`bundle ${bundle}`);
  if (existsSync(path.join(stateDir, 'oci-state', id))) left.push(`engine state ${id}`);
  const veth = vethName(instance, id);
  if (existsSync(`/sys/class/net/${veth}`)) left.push(`veth ${veth}`);
  for (const dir of await cgroupDirs(instance.cgroupParent, id)) left.push(`cgroup ${dir}`);
  return left;
}

/**
 * Residue of this instance's sandboxes that `held` does not contain: cgroups under its own
 * cgroup parent and bundle dirs with their mounts (veths are the Network's `diagnose`).
 * Another roostd on the same host has its own parent, prefix and state dir, so its sandboxes
 * never show up here.
 */
export async function findOrphans(instance: Instance, held: Set<string>): Promise<Leftover[]> {
  const leftovers: Leftover[] = [];
  const cgroupRoot = '/sys/fs/cgroup';
  for (const hierarchy of ['', ...(await fs.readdir(cgroupRoot).catch(() => [] as string[]))]) {
    const parent = path.join(cgroupRoot, hierarchy, instance.cgroupParent);
    for (const entry of await fs.readdir(parent, { withFileTypes: true }).catch(() => [])) {
      if (entry.isDirectory() && !held.has(entry.name)) leftovers.push({ sandboxId: entry.name, what: `cgroup ${path.join(parent, entry.name)}` });
    }
  }
  const sandboxesDir = path.join(instance.stateDir, 'sandboxes');
  for (const id of await fs.readdir(sandboxesDir).catch(() => [] as string[])) {
    if (held.has(id)) continue;
    for (const what of await findResidue(instance.stateDir, id, instance)) {
      if (!what.startsWith('cgroup') && !what.startsWith('veth')) leftovers.push({ sandboxId: id, what });
    }
  }
  return leftovers;
}
