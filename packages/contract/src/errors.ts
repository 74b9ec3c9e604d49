// The one table of error codes: the server answers with them, the SDK maps them to error
// classes, the CLI turns them into a message and an exit code. Codes are stable; add, never rename.

export interface ErrorSpec {
  /** HTTP status the API answers with. */
  status: number;
  /** What the user can do about it; shown by the CLI after the message. */
  hint: string;
}

export const errorCodes = {
  VALIDATION_FAILED: { status: 400, hint: 'Check the request against the API reference at /api/openapi.json.' },
  INVALID_SANDBOX_NAME: {
    status: 400,
    hint: 'Use 1-63 characters: lowercase letters, digits and "-", starting with a letter or digit and not ending with "-".',
  },
  LIMIT_TOO_HIGH: { status: 400, hint: 'Ask for less; the message says the most this host can give.' },
  // 403, not 429: waiting does not help (nothing frees itself on a schedule, so there is no
  // Retry-After to give) and clients that retry 429 by themselves would only repeat a refusal.
  QUOTA_EXCEEDED: {
    status: 403,
    hint: 'Free some (`roost ls`, then `roost rm` what you no longer need) or ask for less; `roost quota` shows your limits and use, and an admin can raise them with `roost quota set <user>`.',
  },
  NETWORK_NOT_ALLOWED: {
    status: 403,
    hint: 'Egress is turned off on this daemon; an admin can allow it with ROOST_ALLOW_NAT=true (see docs/operations.md).',
  },
  INVALID_SSH_KEY: {
    status: 400,
    hint: 'Give one public key line as in ~/.ssh/id_ed25519.pub: "ssh-ed25519 AAAA… comment" (never the private key).',
  },
  SSH_KEY_TAKEN: { status: 409, hint: 'A key opens one user\'s sandboxes only: make another key with `ssh-keygen -t ed25519`.' },
  SSH_KEY_NOT_FOUND: { status: 404, hint: 'Run `roost ssh-key list` to see your keys.' },
  REQUEST_TOO_LARGE: {
    status: 413,
    hint: 'Send less: request line and headers, body and WebSocket messages each have a size limit (docs/operations.md, "HTTP limits").',
  },
  REQUEST_TIMEOUT: {
    status: 408,
    hint: 'Send the whole request at once: the daemon closes connections that take too long to send one (docs/operations.md, "HTTP limits").',
  },
  UNAUTHENTICATED: { status: 401, hint: 'Log in with `roost login` (on the daemon host it finds the admin token by itself).' },
  FORBIDDEN: { status: 403, hint: 'Ask an admin for access.' },
  NOT_FOUND: { status: 404, hint: 'Check the URL; the API lives under /api/v1.' },
  ROOST_USER_NOT_FOUND: { status: 404, hint: 'Check the user name (users have the name they were made with; `roost whoami` shows yours).' },
  SANDBOX_NOT_FOUND: { status: 404, hint: 'Run `roost list` to see your sandboxes.' },
  // A stopped sandbox keeps its name: a second `new` would make a twin that name lookups could
  // not tell apart.
  SANDBOX_NAME_TAKEN: { status: 409, hint: 'Start the one you have with `roost start <name>`, or remove it with `roost rm <name>` (or pick another name).' },
  // Only ended one-shot runs can share a name (they hold none); a lookup never picks one of them silently.
  SANDBOX_NAME_AMBIGUOUS: { status: 409, hint: 'Use the id instead: `roost ls --all` lists them.' },
  SANDBOX_ENDED: {
    status: 409,
    hint: 'An ended run does not start again: `roost run` a new one (with -p to keep it); `roost logs <name>` shows what it printed.',
  },
  USER_NOT_FOUND: { status: 404, hint: 'Log in as root (or another user of the image), or create the user inside first (useradd).' },
  // 404: the sandbox is there, its logs are not (nothing was ever logged for it).
  NO_RUN_LOGS: {
    status: 404,
    hint: 'Logs keep the output of scripts started with `roost run` (also with -p); `roost exec <name> <command>` prints its own output as it runs.',
  },
  SANDBOX_NOT_RUNNING: { status: 409, hint: 'Start it again with `roost start <name>` (or a new one with `roost new <name>`); `roost status <name>` says why it ended.' },
  IMAGE_NOT_FOUND: {
    status: 404,
    hint: 'Leave out --image for the default image; build it with `npm start` in the Roost checkout (images are cached in /var/cache/roost/images).',
  },
  // 409, not 5xx: the daemon works, this host's share of uids for its sandboxes is used up until
  // some are removed; not QUOTA_EXCEEDED, which a user can fix with their own sandboxes.
  TOO_MANY_SANDBOXES: {
    status: 409,
    hint: 'This roostd runs as many sandboxes as its share of host uids allows: remove ones you no longer need (`roost rm`), or ask an admin (docs/operations.md, "Host id regions").',
  },
  // Workspaces (issue 21): see docs/workspaces.md.
  INVALID_WORKSPACE_NAME: {
    status: 400,
    hint: 'Use 1-63 characters: lowercase letters, digits and "-", starting with a letter or digit and not ending with "-" (as sandbox names).',
  },
  WORKSPACE_NOT_FOUND: { status: 404, hint: 'Run `roost workspace list` to see your workspaces; `roost run -w <name>` makes one on first use.' },
  WORKSPACE_NAME_TAKEN: { status: 409, hint: 'Use the one you have (`roost workspace show <name>`), remove it with `roost workspace rm <name>`, or pick another name.' },
  // Two sandboxes writing one workspace at once would corrupt it.
  WORKSPACE_IN_USE: {
    status: 409,
    hint: 'Stop or remove the sandbox named in the message first (`roost stop <name>`), or fork the workspace and use the copy (`roost workspace fork <ws> <new>`).',
  },
  WORKSPACE_EXISTS: { status: 409, hint: 'The workspace store already holds one with that id: run `roost doctor` (admins) and see docs/workspaces.md.' },
  WORKSPACE_UNREADABLE: {
    status: 500,
    hint: 'Its snapshot could not be read, so it was not started empty: see the message and docs/workspaces.md ("When a workspace cannot be read"); `roost workspace snapshots <ws>` lists the others to restore.',
  },
  WORKSPACE_SNAPSHOT_NOT_FOUND: { status: 404, hint: 'Run `roost workspace snapshots <ws>` to see its snapshots.' },
  WORKSPACE_SYNC_FAILED: {
    status: 503,
    hint: 'The local copy is kept and syncs go on retrying; `roost status <name>` shows since when it fails and why. Run `roost sync <name>` once the store is back.',
  },
  DISK_TOO_SMALL: { status: 400, hint: 'Ask for at least what the workspace uses now (`roost status <name>` shows it), or delete files first.' },
  WORKSPACES_UNAVAILABLE: {
    status: 503,
    hint: 'This daemon runs without a workspace store: run it on a host where `roost doctor` reports no workspace problems (docs/workspaces.md).',
  },
  RUNTIME_FAILED: { status: 500, hint: 'See the daemon log for the runtime error; `roostd` prints host problems at start.' },
  INTERNAL: { status: 500, hint: 'This is a bug in Roost: see the daemon log (the request id is in the message).' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof errorCodes;

export function isErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(errorCodes, code);
}

/** The body of every error response. */
export interface ErrorBody {
  error: { code: ErrorCode; message: string; hint: string; requestId?: string };
}
