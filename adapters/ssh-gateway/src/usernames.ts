// What the SSH user name says: `box` (the sandbox, as root) or `box+alice` (as alice inside).
// Sandbox names are DNS labels, so "+" can never be part of one.

export interface SshTarget {
  sandbox: string;
  unixUser: string;
}

const unixUserRe = /^[a-z_][a-z0-9_.-]{0,31}$|^\d{1,10}$/i;

export function parseSshUsername(username: string): SshTarget | undefined {
  const plus = username.indexOf('+');
  const sandbox = plus === -1 ? username : username.slice(0, plus);
  const unixUser = plus === -1 ? 'root' : username.slice(plus + 1);
  if (!sandbox || !unixUserRe.test(unixUser)) return undefined;
  return { sandbox, unixUser };
}
