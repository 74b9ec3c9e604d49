// What the SSH user name says: `box` (the sandbox, as its default user: root unless set) or
// `box+alice` (as alice inside). Sandbox names are DNS labels, so "+" can never be part of one.
import { unixUserPattern } from '@roost/contract/names';

export interface SshTarget {
  sandbox: string;
  /** Absent: the sandbox's default user. */
  unixUser?: string;
}

export function parseSshUsername(username: string): SshTarget | undefined {
  const plus = username.indexOf('+');
  const sandbox = plus === -1 ? username : username.slice(0, plus);
  if (!sandbox) return undefined;
  if (plus === -1) return { sandbox };
  const unixUser = username.slice(plus + 1);
  return unixUserPattern.test(unixUser) ? { sandbox, unixUser } : undefined;
}

/**
 * The target on a tunnel opened for one sandbox (`roost proxy`): that sandbox; the name before
 * a "+" is not looked at (an IDE sends the local user name), the part after it is the user.
 */
export function parseTunnelUsername(username: string, sandbox: string): SshTarget | undefined {
  if (!username.includes('+')) return { sandbox };
  const parsed = parseSshUsername(username);
  return parsed && { sandbox, unixUser: parsed.unixUser };
}
