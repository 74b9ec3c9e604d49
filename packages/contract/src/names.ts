// The shapes of names that cross the API, without zod, so the CLI can check what a server sends
// without loading the schemas. Core keeps its own copy of the sandbox-name rule (core imports
// nothing internal); testkit's `names.test.ts` keeps the two equal.

/** A sandbox name: a DNS label (it becomes the hostname inside). */
export const sandboxNamePattern = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** A user of a sandbox's /etc/passwd as SSH (`box+user`), the API and the CLI take it: a name or a uid. */
export const unixUserPattern = /^[a-z_][a-z0-9_.-]{0,31}$|^\d{1,10}$/i;
