// Sandbox names become hostnames and URL parts, so they follow the rules of a DNS label.
import { RoostError } from './errors.js';

const namePattern = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
export const sandboxNameRule =
  '1-63 characters: lowercase letters, digits and "-", starting and ending with a letter or digit';

export function assertValidSandboxName(name: string): void {
  if (!namePattern.test(name)) {
    throw new RoostError('INVALID_SANDBOX_NAME', `invalid sandbox name "${name}": use ${sandboxNameRule}`);
  }
}

/** True when a reference looks like an id rather than a name. */
export function isSandboxId(ref: string): boolean {
  return ref.startsWith('sb_');
}

/** Workspace names follow the sandbox-name rule: `new <name>` gets a workspace of its own name. */
export function assertValidWorkspaceName(name: string): void {
  if (!namePattern.test(name)) {
    throw new RoostError('INVALID_WORKSPACE_NAME', `invalid workspace name "${name}": use ${sandboxNameRule}`);
  }
}

/** True when a workspace reference looks like an id rather than a name. */
export function isWorkspaceId(ref: string): boolean {
  return ref.startsWith('ws_');
}
