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
